#include "esp.h"

#include <string.h>

#include "fault.h"

int esp_cipher_init(esp_cipher *c, const uint8_t *key, size_t key_len, const uint8_t salt[ESP_SALT_LENGTH],
                    uint32_t spi, int esn, int encrypt) {
  const EVP_CIPHER *cipher;
  switch (key_len) {
    case 16: cipher = EVP_aes_128_gcm(); break;
    case 24: cipher = EVP_aes_192_gcm(); break;
    case 32: cipher = EVP_aes_256_gcm(); break;
    default: return -1;
  }
  memset(c, 0, sizeof *c);
  c->ctx = FAULT_OR(EVP_CIPHER_CTX_new(), NULL, ENOMEM);
  if (!c->ctx) return -1;
  c->spi = spi;
  memcpy(c->salt, salt, ESP_SALT_LENGTH);
  c->esn = esn;
  c->encrypt = encrypt;
  /* Key schedule once (RFC 4106 §4: 12-byte nonce); per packet EVP_CipherInit_ex with only the IV. */
  if (EVP_CipherInit_ex(c->ctx, cipher, NULL, NULL, NULL, encrypt) != 1 ||
      EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_IVLEN, ESP_NONCE_LENGTH, NULL) != 1 ||
      EVP_CipherInit_ex(c->ctx, NULL, NULL, key, NULL, encrypt) != 1) {
    EVP_CIPHER_CTX_free(c->ctx);
    c->ctx = NULL;
    return -1;
  }
  return 0;
}

void esp_cipher_free(esp_cipher *c) {
  if (c->ctx) EVP_CIPHER_CTX_free(c->ctx);
  c->ctx = NULL;
  OPENSSL_cleanse(c->salt, sizeof c->salt); /* cleanse: a plain memset before free is optimised away */
}

/* RFC 4106 §5: the one place the AAD is built. */
static size_t esp_aad(const esp_cipher *c, uint32_t seq_hi, uint32_t seq_lo, uint8_t aad[ESP_AAD_ESN_LENGTH]) {
  put_u32(aad, c->spi);
  if (c->esn) {
    put_u32(aad + 4, seq_hi);
    put_u32(aad + 8, seq_lo);
    return ESP_AAD_ESN_LENGTH;
  }
  put_u32(aad + 4, seq_lo);
  return ESP_AAD_LENGTH;
}

/* RFC 4106 §4: nonce = salt || IV. */
static void esp_nonce(const esp_cipher *c, const uint8_t iv[ESP_IV_LENGTH], uint8_t nonce[ESP_NONCE_LENGTH]) {
  memcpy(nonce, c->salt, ESP_SALT_LENGTH);
  memcpy(nonce + ESP_SALT_LENGTH, iv, ESP_IV_LENGTH);
}

int esp_seal_danger(esp_cipher *c, uint32_t seq_hi, uint32_t seq_lo, const uint8_t iv[ESP_IV_LENGTH],
                    const struct iovec *pt, int pt_count, uint8_t *out) {
  uint8_t nonce[ESP_NONCE_LENGTH], aad[ESP_AAD_ESN_LENGTH];
  int n;
  if (!c->encrypt) return -1;
  esp_nonce(c, iv, nonce);
  size_t aad_len = esp_aad(c, seq_hi, seq_lo, aad);
  put_u32(out + ESP_SPI_OFFSET, c->spi);
  put_u32(out + ESP_SEQ_OFFSET, seq_lo);
  memcpy(out + ESP_IV_OFFSET, iv, ESP_IV_LENGTH);
  uint8_t *ct = out + ESP_PAYLOAD_OFFSET;
  size_t total = 0;
  if (EVP_EncryptInit_ex(c->ctx, NULL, NULL, NULL, nonce) != 1) return -1;
  if (EVP_EncryptUpdate(c->ctx, NULL, &n, aad, (int)aad_len) != 1) return -1;
  for (int i = 0; i < pt_count; i++) {
    if (pt[i].iov_len == 0) continue;
    if (EVP_EncryptUpdate(c->ctx, ct + total, &n, pt[i].iov_base, (int)pt[i].iov_len) != 1) return -1;
    total += (size_t)n;
  }
  if (EVP_EncryptFinal_ex(c->ctx, ct + total, &n) != 1) return -1;
  total += (size_t)n;
  if (EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_GET_TAG, ESP_ICV_LENGTH, ct + total) != 1) return -1;
  return (int)(ESP_PAYLOAD_OFFSET + total + ESP_ICV_LENGTH);
}

int esp_open_danger(esp_cipher *c, const uint8_t *datagram, size_t len, uint32_t seq_hi, uint8_t *out) {
  uint8_t nonce[ESP_NONCE_LENGTH], aad[ESP_AAD_ESN_LENGTH], tag[ESP_ICV_LENGTH];
  int n, m;
  if (c->encrypt || len < ESP_MIN_LENGTH) return -1;
  esp_nonce(c, datagram + ESP_IV_OFFSET, nonce);
  size_t aad_len = esp_aad(c, seq_hi, get_u32(datagram + ESP_SEQ_OFFSET), aad);
  size_t ct_len = len - ESP_PAYLOAD_OFFSET - ESP_ICV_LENGTH;
  /* copy the tag first: decrypting in place may not overwrite it, but keep it independent of out */
  memcpy(tag, datagram + ESP_PAYLOAD_OFFSET + ct_len, ESP_ICV_LENGTH);
  if (EVP_DecryptInit_ex(c->ctx, NULL, NULL, NULL, nonce) != 1) return -1;
  if (EVP_DecryptUpdate(c->ctx, NULL, &n, aad, (int)aad_len) != 1) return -1;
  if (EVP_DecryptUpdate(c->ctx, out, &n, datagram + ESP_PAYLOAD_OFFSET, (int)ct_len) != 1) return -1;
  if (EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_TAG, ESP_ICV_LENGTH, tag) != 1) return -1;
  if (EVP_DecryptFinal_ex(c->ctx, out + n, &m) != 1) return -1;
  return n + m;
}

int gcm_seal(esp_cipher *c, const uint8_t nonce[ESP_NONCE_LENGTH], const uint8_t *aad, size_t aad_len,
             const uint8_t *pt, size_t pt_len, uint8_t *out) {
  int n, m = 0;
  if (!c->encrypt) return -1;
  if (EVP_EncryptInit_ex(c->ctx, NULL, NULL, NULL, nonce) != 1) return -1;
  if (aad_len && EVP_EncryptUpdate(c->ctx, NULL, &n, aad, (int)aad_len) != 1) return -1;
  n = 0;
  if (pt_len && EVP_EncryptUpdate(c->ctx, out, &n, pt, (int)pt_len) != 1) return -1;
  if (EVP_EncryptFinal_ex(c->ctx, out + n, &m) != 1) return -1;
  if (EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_GET_TAG, ESP_ICV_LENGTH, out + n + m) != 1) return -1;
  return n + m + ESP_ICV_LENGTH;
}

int gcm_open(esp_cipher *c, const uint8_t nonce[ESP_NONCE_LENGTH], const uint8_t *aad, size_t aad_len,
             const uint8_t *sealed, size_t sealed_len, uint8_t *out) {
  uint8_t tag[ESP_ICV_LENGTH];
  int n = 0, m = 0;
  if (c->encrypt || sealed_len < ESP_ICV_LENGTH) return -1;
  size_t ct_len = sealed_len - ESP_ICV_LENGTH;
  memcpy(tag, sealed + ct_len, ESP_ICV_LENGTH);
  if (EVP_DecryptInit_ex(c->ctx, NULL, NULL, NULL, nonce) != 1) return -1;
  if (aad_len && EVP_DecryptUpdate(c->ctx, NULL, &n, aad, (int)aad_len) != 1) return -1;
  n = 0;
  if (ct_len && EVP_DecryptUpdate(c->ctx, out, &n, sealed, (int)ct_len) != 1) return -1;
  if (EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_TAG, ESP_ICV_LENGTH, tag) != 1) return -1;
  if (EVP_DecryptFinal_ex(c->ctx, out + n, &m) != 1) return -1;
  return n + m;
}

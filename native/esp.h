/*
 * ESP with AES-GCM (RFC 4303 §2, RFC 4106): the SA's cipher state and the one
 * place the native code builds nonces and AAD. Mirrors src/vxlan/wire/esp.ts;
 * the wire constants match src/vxlan/wire/constants.ts.
 *
 *   SPI(4) | Seq low(4) | IV(8) | ciphertext (payload | pad | pad len | next hdr) | ICV(16)
 *   nonce = salt(4) || IV(8)         AAD = SPI || seq low, or SPI || seq high || seq low (ESN)
 */
#ifndef VEIL_ESP_H
#define VEIL_ESP_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define ESP_SPI_OFFSET 0         /* RFC 4303 §2.1 */
#define ESP_SEQ_OFFSET 4         /* RFC 4303 §2.2 */
#define ESP_IV_OFFSET 8          /* RFC 4106 §3.1: the explicit IV opens the payload */
#define ESP_IV_LENGTH 8          /* RFC 4106 §3.1 */
#define ESP_PAYLOAD_OFFSET 16    /* RFC 4106 §3.1: the ciphertext, after SPI, sequence number and IV */
#define ESP_SALT_LENGTH 4        /* RFC 4106 §4, §8.1 */
#define ESP_NONCE_LENGTH 12      /* RFC 4106 §4: salt || IV */
#define ESP_AAD_LENGTH 8         /* RFC 4106 §5: SPI || seq */
#define ESP_AAD_ESN_LENGTH 12    /* RFC 4106 §5: SPI || seq high || seq low */
#define ESP_ICV_LENGTH 16        /* RFC 4106 §6: veil never truncates it */
#define ESP_TRAILER_LENGTH 2     /* RFC 4303 §2.5, §2.6: pad length, next header */
#define ESP_ALIGNMENT 4          /* RFC 4303 §2.4: ciphertext ends on a 4-byte boundary */
#define ESP_SPI_MIN 256          /* RFC 4303 §2.1: 1-255 reserved; 0 is the RFC 3948 non-ESP marker */
/* header, IV, an empty payload padded to 4 with its trailer, ICV (src/vxlan/wire/constants.ts ESP_MIN_LENGTH) */
#define ESP_MIN_LENGTH (ESP_PAYLOAD_OFFSET + ESP_ALIGNMENT + ESP_ICV_LENGTH)
/* bytes sealing adds around the inner payload at most: header+IV, 3 pad, trailer, ICV */
#define ESP_MAX_OVERHEAD (ESP_PAYLOAD_OFFSET + (ESP_ALIGNMENT - 1) + ESP_TRAILER_LENGTH + ESP_ICV_LENGTH)

#define ESP_IN_UDP_PORT 4500     /* RFC 3948 §2.1 */
#define NON_ESP_MARKER_LENGTH 4  /* RFC 3948 §2.2: four zero octets where an SPI would be */
#define NAT_KEEPALIVE_LENGTH 1   /* RFC 3948 §2.3: a single 0xFF octet */
#define NAT_KEEPALIVE_BYTE 0xff

#define IPV4_HEADER_LENGTH 20    /* RFC 791 §3.1, without options */
#define UDP_HEADER_LENGTH 8      /* RFC 768 */
#define UDP_SRC_PORT_OFFSET 0    /* RFC 768 */
#define UDP_DST_PORT_OFFSET 2
#define UDP_LENGTH_OFFSET 4
#define UDP_CHECKSUM_OFFSET 6
#define IPPROTO_UDP_NUMBER 17    /* RFC 768: UDP; the ESP next header (RFC 4303 §2.6) of VXLAN */

#define VXLAN_HEADER_LENGTH 8    /* RFC 7348 §5 */
#define VXLAN_FLAGS_OFFSET 0     /* RFC 7348 §5 */
#define VXLAN_FLAG_I 0x08        /* RFC 7348 §5: set for a valid VNI */
#define VXLAN_VNI_OFFSET 4       /* RFC 7348 §5: the VNI is the top 24 bits of this word */
#define VXLAN_VNI_SHIFT 8
#define VXLAN_VNI_MAX 0xffffff
#define VXLAN_PORT 4789          /* RFC 7348 §5: IANA-assigned */

typedef struct esp_cipher {
  EVP_CIPHER_CTX *ctx; /* keyed once; per packet only the IV changes */
  uint32_t spi;
  uint8_t salt[ESP_SALT_LENGTH];
  int esn;
  int encrypt;
} esp_cipher;

static inline void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint32_t get_u32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t get_u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* 0 on success, -1 on a bad key length or an OpenSSL failure. */
int esp_cipher_init(esp_cipher *c, const uint8_t *key, size_t key_len, const uint8_t salt[ESP_SALT_LENGTH],
                    uint32_t spi, int esn, int encrypt);
void esp_cipher_free(esp_cipher *c);

/* Seals an already padded plaintext given as iovecs into out (SPI..ICV); returns the length or -1. */
int esp_seal_danger(esp_cipher *c, uint32_t seq_hi, uint32_t seq_lo, const uint8_t iv[ESP_IV_LENGTH],
                    const struct iovec *pt, int pt_count, uint8_t *out);

/* Verifies and decrypts datagram (SPI..ICV, len >= ESP_MIN_LENGTH) into out (may equal
 * datagram + ESP_PAYLOAD_OFFSET: in place); returns the plaintext length, or -1 when the ICV fails. */
int esp_open_danger(esp_cipher *c, const uint8_t *datagram, size_t len, uint32_t seq_hi, uint8_t *out);

/* Plain AES-GCM with a 12-byte nonce and any AAD (Wycheproof); out = ct || tag / pt. */
int gcm_seal(esp_cipher *c, const uint8_t nonce[ESP_NONCE_LENGTH], const uint8_t *aad, size_t aad_len,
             const uint8_t *pt, size_t pt_len, uint8_t *out);
int gcm_open(esp_cipher *c, const uint8_t nonce[ESP_NONCE_LENGTH], const uint8_t *aad, size_t aad_len,
             const uint8_t *sealed, size_t sealed_len, uint8_t *out);

#endif

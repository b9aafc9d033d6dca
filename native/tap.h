/*
 * The TAP port (tap.c): a network's bridge hands the gateway whole Ethernet frames, and takes them back,
 * with no kernel VXLAN device and no UDP hop in between (docs/plumbing.md "The TAP port").
 *
 *   read:  virtio_net_hdr(10) | Ethernet frame, up to 64 KiB when the kernel hands a TCP super-segment (TSO)
 *   write: virtio_net_hdr(10) | one frame (DATA_VALID), or consecutive TCP segments merged into one (GSO)
 *
 * Codecs only: tap_parse and tap_segment never touch a socket; tap_open and tap_write_run do the I/O.
 */
#ifndef VEIL_TAP_H
#define VEIL_TAP_H

#include <stdint.h>
#include <sys/uio.h>

#include "dataplane-internal.h"

/* virtio 1.1 §5.1.6 struct virtio_net_hdr, without num_buffers (the TAP's default size); the
 * multi-byte fields are in the host's order (legacy interface, TUNSETVNETLE unset). */
#define VNET_HEADER_LENGTH 10
#define VNET_FLAGS_OFFSET 0
#define VNET_GSO_TYPE_OFFSET 1
#define VNET_HDR_LEN_OFFSET 2
#define VNET_GSO_SIZE_OFFSET 4
#define VNET_CSUM_START_OFFSET 6
#define VNET_CSUM_OFFSET_OFFSET 8
#define VNET_F_NEEDS_CSUM 1 /* the checksum at csum_start + csum_offset is to be completed */
#define VNET_F_DATA_VALID 2 /* the receiver need not verify the checksums */
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_ECN 0x80

#define ETH_HEADER_LENGTH 14 /* IEEE 802.3: destination, source, EtherType */
#define ETH_TYPE_OFFSET 12
#define ETH_TYPE_IPV4 0x0800
#define IPV4_TOTAL_LENGTH_OFFSET 2 /* RFC 791 §3.1 */
#define IPV4_ID_OFFSET 4
#define IPV4_FRAGMENT_OFFSET 6   /* flags (3 bits) and fragment offset */
#define IPV4_DONT_FRAGMENT 0x4000
#define IPV4_MORE_FRAGMENTS 0x2000
#define IPV4_FRAGMENT_MASK 0x1fff
#define IPV4_PROTOCOL_OFFSET 9
#define IPV4_CHECKSUM_OFFSET 10
#define IPV4_SOURCE_OFFSET 12    /* then the destination: the pseudo-header's 8 address bytes */
#define IPV4_PROTOCOL_TCP 6
#define TCP_SEQ_OFFSET 4         /* RFC 9293 §3.1 */
#define TCP_ACK_OFFSET 8
#define TCP_DATA_OFFSET_OFFSET 12
#define TCP_FLAGS_OFFSET 13
#define TCP_WINDOW_OFFSET 14
#define TCP_CHECKSUM_OFFSET 16
#define TCP_HEADER_MIN 20
#define TCP_MSS_MIN 48 /* the least segment size Linux sends (TCP_MIN_SND_MSS) */
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

/* The largest frame a TAP read returns: a 64 KiB IP packet in its Ethernet header, with the vnet header. */
#define TAP_READ_MAX (VNET_HEADER_LENGTH + ETH_HEADER_LENGTH + 65535)

#pragma GCC visibility push(hidden)

/*
 * Creates TAP device `name` in the network namespace at netns_path, with vnet headers and, where the
 * kernel takes them, checksum and TCPv4 segmentation offloads (*offloads = 1). Non-blocking; the device
 * goes away with the descriptor. -1 with err filled.
 */
int tap_open(const char *netns_path, const char *name, int *offloads, char *err, size_t err_len);

/*
 * Checks a read (vnet header and frame) and completes a checksum the kernel left to be completed.
 * Returns DROP_COUNT when the frame can go, else why not. Call once per frame: completing is not idempotent.
 */
enum drop_reason tap_parse(uint8_t *buf, uint32_t len, tap_frame_info *f);

/* Writes segment i's headers into hdr (TAP_HEADERS_MAX) and points payload at its data; returns the headers' length. */
uint32_t tap_segment(const tap_frame_info *f, uint32_t i, uint8_t *hdr, struct iovec *payload);

/* The outer UDP source port of a frame: a hash of its flow, so the underlay spreads flows (RFC 7348 §5). */
uint16_t tap_flow_port(const uint8_t *frame, uint32_t len);

/*
 * Writes the run of queued TAP frames that starts at tx entry `first` to the TAP of their network,
 * merging consecutive segments of one TCP stream into one write (GSO), under the read lock: the TAP's
 * descriptor is looked up by VNI there, so a network removed meanwhile takes no frame. Returns the index
 * of the first entry after the run.
 */
int tap_write_run(dp_thread *t, int first);

#pragma GCC visibility pop

#endif

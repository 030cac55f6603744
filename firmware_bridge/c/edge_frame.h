/*
 * edge_frame: reference encoder for the edge-agent serial protocol, version 1.
 *
 * C99, no malloc, no global state. Every function writes one complete wire frame
 *     0x00 | COBS(header | payload | crc32) | 0x00
 * into a caller-supplied buffer and returns its length, or 0 if the buffer is too small or
 * an argument is out of range (nothing useful is written then). A buffer of
 * EF_MAX_WIRE_SIZE bytes always suffices. COBS and CRC-32 are computed on the fly, so no
 * second buffer is needed. See docs/serial-protocol.md.
 */
#ifndef EDGE_FRAME_H
#define EDGE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define EF_PROTOCOL_VERSION 1u
#define EF_HEADER_SIZE 12u
#define EF_MAX_FRAME_SIZE 1024u /* header + payload + crc, before COBS */
#define EF_MAX_WIRE_SIZE (EF_MAX_FRAME_SIZE + EF_MAX_FRAME_SIZE / 254u + 1u + 2u)
#define EF_MAX_CHANNELS 64u
#define EF_MAX_NAME 32u
#define EF_MAX_UNIT 16u
#define EF_MAX_FIRMWARE 32u
#define EF_INT16_MISSING (-32768)

enum ef_type { EF_HELLO = 0x01, EF_DATA = 0x02, EF_HEARTBEAT = 0x03 };
enum ef_encoding { EF_FLOAT32 = 0, EF_INT16 = 1 };

/* One per device: its id and the running sequence number (starts at 0, wraps). */
typedef struct {
    uint32_t device_id;
    uint16_t seq;
} ef_device;

/* CRC-32/ISO-HDLC (zlib): pass 0 to start, the previous result to continue. */
uint32_t ef_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* HELLO: channel names (1..32 bytes) and units (0..16 bytes, may be NULL = all ""). */
size_t ef_encode_hello(ef_device *dev, uint32_t ts_ms, const char *firmware,
                       float sample_rate_hz, uint8_t n_channels,
                       const char *const *names, const char *const *units,
                       uint8_t *out, size_t cap);

/* DATA, float32: values are sample-major, n_samples * n_channels of them. */
size_t ef_encode_data_f32(ef_device *dev, uint32_t ts_ms, uint32_t period_us,
                          uint8_t n_channels, uint8_t n_samples, const float *values,
                          uint8_t *out, size_t cap);

/* DATA, int16 scaled: value = raw * scale; raw EF_INT16_MISSING means no value. */
size_t ef_encode_data_i16(ef_device *dev, uint32_t ts_ms, uint32_t period_us,
                          uint8_t n_channels, uint8_t n_samples, float scale,
                          const int16_t *raw, uint8_t *out, size_t cap);

/* HEARTBEAT: samples the device itself dropped since boot. */
size_t ef_encode_heartbeat(ef_device *dev, uint32_t ts_ms, uint32_t tx_dropped,
                           uint8_t *out, size_t cap);

#endif /* EDGE_FRAME_H */

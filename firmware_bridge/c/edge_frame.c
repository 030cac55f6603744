/* edge_frame: reference encoder, see edge_frame.h. */
#include "edge_frame.h"

#include <string.h>

typedef char ef_float_is_32_bits[(sizeof(float) == 4) ? 1 : -1];

/* Streaming writer: raw bytes in, COBS-encoded bytes out, CRC-32 accumulated on the way. */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;      /* next free byte of out */
    size_t code_pos; /* where the current block's code byte goes */
    uint8_t code;    /* 1 + bytes in the current block */
    size_t raw_len;  /* bytes before COBS, to enforce EF_MAX_FRAME_SIZE */
    uint32_t crc;    /* running CRC register (pre-inverted) */
    int failed;
} ef_writer;

uint32_t ef_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        for (bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static void w_begin(ef_writer *w, uint8_t *out, size_t cap)
{
    w->out = out;
    w->cap = cap;
    w->failed = cap < 2;
    w->raw_len = 0;
    w->crc = 0;
    if (!w->failed) {
        out[0] = 0x00; /* leading delimiter */
    }
    w->code_pos = 1;
    w->pos = 2;
    w->code = 1;
}

static void w_out(ef_writer *w, uint8_t b)
{
    if (w->pos >= w->cap) {
        w->failed = 1;
        return;
    }
    w->out[w->pos++] = b;
}

static void w_close_block(ef_writer *w)
{
    if (w->code_pos < w->cap) {
        w->out[w->code_pos] = w->code;
    } else {
        w->failed = 1;
    }
}

/* Append one raw byte: COBS-encode it (the CRC is handled by the callers). */
static void w_cobs(ef_writer *w, uint8_t b)
{
    if (w->failed) {
        return;
    }
    if (++w->raw_len > EF_MAX_FRAME_SIZE) {
        w->failed = 1;
        return;
    }
    if (b == 0) {
        w_close_block(w);
        w->code_pos = w->pos;
        w_out(w, 0xFF); /* placeholder for the next code byte */
        w->code = 1;
        return;
    }
    w_out(w, b);
    if (++w->code == 0xFF) {
        w_close_block(w);
        w->code_pos = w->pos;
        w_out(w, 0xFF);
        w->code = 1;
    }
}

static void w_u8(ef_writer *w, uint8_t b)
{
    w->crc = ef_crc32(w->crc, &b, 1);
    w_cobs(w, b);
}

static void w_u16(ef_writer *w, uint16_t v)
{
    w_u8(w, (uint8_t)(v & 0xFFu));
    w_u8(w, (uint8_t)(v >> 8));
}

static void w_u32(ef_writer *w, uint32_t v)
{
    w_u16(w, (uint16_t)(v & 0xFFFFu));
    w_u16(w, (uint16_t)(v >> 16));
}

static void w_f32(ef_writer *w, float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    w_u32(w, bits);
}

static int w_str8(ef_writer *w, const char *s, size_t lo, size_t hi)
{
    size_t n = s ? strlen(s) : 0;
    size_t i;
    if (n < lo || n > hi) {
        return 0;
    }
    w_u8(w, (uint8_t)n);
    for (i = 0; i < n; i++) {
        w_u8(w, (uint8_t)s[i]);
    }
    return 1;
}

static void w_header(ef_writer *w, ef_device *dev, uint8_t type, uint32_t ts_ms)
{
    w_u8(w, EF_PROTOCOL_VERSION);
    w_u8(w, type);
    w_u32(w, dev->device_id);
    w_u16(w, dev->seq);
    w_u32(w, ts_ms);
}

/* Append the CRC (not itself CRC'd), close the last block and the trailing delimiter. */
static size_t w_finish(ef_writer *w, ef_device *dev)
{
    uint32_t crc = w->crc;
    int i;
    for (i = 0; i < 4; i++) {
        w_cobs(w, (uint8_t)(crc >> (8 * i)));
    }
    if (w->failed) {
        return 0;
    }
    w_close_block(w);
    w_out(w, 0x00);
    if (w->failed) {
        return 0;
    }
    dev->seq = (uint16_t)(dev->seq + 1u);
    return w->pos;
}

size_t ef_encode_hello(ef_device *dev, uint32_t ts_ms, const char *firmware,
                       float sample_rate_hz, uint8_t n_channels,
                       const char *const *names, const char *const *units,
                       uint8_t *out, size_t cap)
{
    ef_writer w;
    uint8_t c;
    if (n_channels < 1 || n_channels > EF_MAX_CHANNELS || names == NULL) {
        return 0;
    }
    w_begin(&w, out, cap);
    w_header(&w, dev, EF_HELLO, ts_ms);
    w_f32(&w, sample_rate_hz);
    w_u8(&w, n_channels);
    if (!w_str8(&w, firmware, 0, EF_MAX_FIRMWARE)) {
        return 0;
    }
    for (c = 0; c < n_channels; c++) {
        if (!w_str8(&w, names[c], 1, EF_MAX_NAME) ||
            !w_str8(&w, units ? units[c] : "", 0, EF_MAX_UNIT)) {
            return 0;
        }
    }
    return w_finish(&w, dev);
}

static int data_ok(uint8_t n_channels, uint8_t n_samples)
{
    return n_channels >= 1 && n_channels <= EF_MAX_CHANNELS && n_samples >= 1;
}

size_t ef_encode_data_f32(ef_device *dev, uint32_t ts_ms, uint32_t period_us,
                          uint8_t n_channels, uint8_t n_samples, const float *values,
                          uint8_t *out, size_t cap)
{
    ef_writer w;
    size_t i, n = (size_t)n_channels * n_samples;
    if (!data_ok(n_channels, n_samples) || values == NULL) {
        return 0;
    }
    w_begin(&w, out, cap);
    w_header(&w, dev, EF_DATA, ts_ms);
    w_u8(&w, EF_FLOAT32);
    w_u8(&w, n_channels);
    w_u8(&w, n_samples);
    w_u32(&w, period_us);
    for (i = 0; i < n && !w.failed; i++) {
        w_f32(&w, values[i]);
    }
    return w_finish(&w, dev);
}

size_t ef_encode_data_i16(ef_device *dev, uint32_t ts_ms, uint32_t period_us,
                          uint8_t n_channels, uint8_t n_samples, float scale,
                          const int16_t *raw, uint8_t *out, size_t cap)
{
    ef_writer w;
    size_t i, n = (size_t)n_channels * n_samples;
    if (!data_ok(n_channels, n_samples) || raw == NULL || !(scale > 0.0f)) {
        return 0;
    }
    w_begin(&w, out, cap);
    w_header(&w, dev, EF_DATA, ts_ms);
    w_u8(&w, EF_INT16);
    w_u8(&w, n_channels);
    w_u8(&w, n_samples);
    w_u32(&w, period_us);
    w_f32(&w, scale);
    for (i = 0; i < n && !w.failed; i++) {
        w_u16(&w, (uint16_t)raw[i]);
    }
    return w_finish(&w, dev);
}

size_t ef_encode_heartbeat(ef_device *dev, uint32_t ts_ms, uint32_t tx_dropped,
                           uint8_t *out, size_t cap)
{
    ef_writer w;
    w_begin(&w, out, cap);
    w_header(&w, dev, EF_HEARTBEAT, ts_ms);
    w_u32(&w, tx_dropped);
    return w_finish(&w, dev);
}

/*
 * example: write a HELLO and then DATA/HEARTBEAT frames to stdout, as a device would.
 *
 *   example N_SAMPLES N_CHANNELS SEED [CORRUPT_PERCENT [SAMPLES_PER_FRAME]]
 *
 * Every 7th DATA frame uses the int16 encoding, every 10th frame is a HEARTBEAT. With
 * CORRUPT_PERCENT > 0 that share of frames gets one flipped bit; their sequence numbers are
 * listed on stderr as "corrupted <seq>". Build: cc -std=c99 example.c edge_frame.c -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "edge_frame.h"

static uint32_t rng_state;

static uint32_t xorshift32(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static int emit(uint8_t *buf, size_t len, uint16_t seq, unsigned corrupt_percent)
{
    if (len == 0) {
        fprintf(stderr, "encode failed at seq %u\n", (unsigned)seq);
        return 0;
    }
    if (corrupt_percent && xorshift32() % 100u < corrupt_percent) {
        uint32_t bit = xorshift32() % (uint32_t)(len * 8u);
        buf[bit / 8u] ^= (uint8_t)(1u << (bit % 8u));
        fprintf(stderr, "corrupted %u\n", (unsigned)seq);
    }
    return fwrite(buf, 1, len, stdout) == len;
}

int main(int argc, char **argv)
{
    static uint8_t wire[EF_MAX_WIRE_SIZE];
    static float values[255 * EF_MAX_CHANNELS];
    static int16_t raw[255 * EF_MAX_CHANNELS];
    static char name_buf[EF_MAX_CHANNELS][8];
    const char *names[EF_MAX_CHANNELS];
    const char *units[EF_MAX_CHANNELS];
    ef_device dev;
    long n_samples, n_channels, per_frame = 1, corrupt = 0;
    long sent = 0, frames = 0, c, s;
    uint32_t ts_ms = 0;
    const float rate = 100.0f;

    if (argc < 4) {
        fprintf(stderr, "usage: %s N_SAMPLES N_CHANNELS SEED [CORRUPT_PERCENT [PER_FRAME]]\n",
                argv[0]);
        return 2;
    }
    n_samples = strtol(argv[1], NULL, 10);
    n_channels = strtol(argv[2], NULL, 10);
    rng_state = (uint32_t)strtoul(argv[3], NULL, 10) | 1u;
    if (argc > 4) {
        corrupt = strtol(argv[4], NULL, 10);
    }
    if (argc > 5) {
        per_frame = strtol(argv[5], NULL, 10);
    }
    if (n_samples < 0 || n_channels < 1 || n_channels > (long)EF_MAX_CHANNELS ||
        per_frame < 1 || per_frame > 255 || corrupt < 0 || corrupt > 100) {
        fprintf(stderr, "argument out of range\n");
        return 2;
    }
    for (c = 0; c < n_channels; c++) {
        snprintf(name_buf[c], sizeof name_buf[c], "ch%ld", c);
        names[c] = name_buf[c];
        units[c] = (c % 2) ? "V" : "";
    }
    dev.device_id = 0xC0DE0000u | (rng_state & 0xFFFFu);
    dev.seq = 0;

    if (!emit(wire, ef_encode_hello(&dev, ts_ms, "example-1.0", rate, (uint8_t)n_channels,
                                    names, units, wire, sizeof wire),
              (uint16_t)(dev.seq - 1u), (unsigned)corrupt)) {
        return 1;
    }
    while (sent < n_samples) {
        long n = n_samples - sent < per_frame ? n_samples - sent : per_frame;
        uint32_t period_us = n > 1 ? (uint32_t)(1e6f / rate) : 0u;
        size_t len;
        for (s = 0; s < n; s++) {
            for (c = 0; c < n_channels; c++) {
                float noise = (float)(xorshift32() % 1000u) / 10000.0f;
                float v = sinf((float)(sent + s) * 0.1f + (float)c) * (float)(c + 1) + noise;
                values[s * n_channels + c] = v;
                raw[s * n_channels + c] = (int16_t)lroundf(v * 1000.0f);
            }
        }
        frames++;
        if (frames % 7 == 0) {
            len = ef_encode_data_i16(&dev, ts_ms, period_us, (uint8_t)n_channels, (uint8_t)n,
                                     0.001f, raw, wire, sizeof wire);
        } else {
            len = ef_encode_data_f32(&dev, ts_ms, period_us, (uint8_t)n_channels, (uint8_t)n,
                                     values, wire, sizeof wire);
        }
        if (!emit(wire, len, (uint16_t)(dev.seq - 1u), (unsigned)corrupt)) {
            return 1;
        }
        sent += n;
        ts_ms += (uint32_t)(n * 10);
        if (frames % 10 == 0) {
            len = ef_encode_heartbeat(&dev, ts_ms, 0u, wire, sizeof wire);
            if (!emit(wire, len, (uint16_t)(dev.seq - 1u), (unsigned)corrupt)) {
                return 1;
            }
        }
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

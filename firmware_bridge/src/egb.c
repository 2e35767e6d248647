/* edge-gmm bridge frame encoder. See egb.h and PROTOCOL.md. */
#include "egb.h"

#include <string.h>

/* CRC-32/ISO-HDLC (the zlib / Ethernet CRC): reflected poly 0xEDB88320, init and xorout 0xFFFFFFFF.
 * Bitwise: no 1 KiB table in flash; ~8 shifts per byte is cheap next to the UART. */
static uint32_t crc_update(uint32_t crc, uint8_t b)
{
    crc ^= b;
    for (int k = 0; k < 8; k++) {
        crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc;
}

uint32_t egb_crc32(const uint8_t *data, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc = crc_update(crc, data[i]);
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Streaming COBS writer: bytes are stuffed straight into `out` while the CRC runs, so no body buffer. */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;
    size_t code_pos;
    uint8_t code;
    uint32_t crc;
    int overflow;
} writer_t;

static void w_raw(writer_t *w, uint8_t b)
{
    if (w->pos < w->cap) {
        w->out[w->pos] = b;
    } else {
        w->overflow = 1;
    }
    w->pos++;
}

static void w_open_block(writer_t *w)
{
    w->code_pos = w->pos;
    w->code = 1;
    w_raw(w, 0); /* placeholder for the block code */
}

static void w_close_block(writer_t *w)
{
    if (w->code_pos < w->cap) {
        w->out[w->code_pos] = w->code;
    }
}

static void w_cobs(writer_t *w, uint8_t b)
{
    if (b == 0) {
        w_close_block(w);
        w_open_block(w);
        return;
    }
    w_raw(w, b);
    w->code++;
    if (w->code == 0xFF) { /* 254 data bytes: close this block (no implied zero) and open the next */
        w_close_block(w);
        w_open_block(w);
    }
}

static void w_byte(writer_t *w, uint8_t b)
{
    w->crc = crc_update(w->crc, b);
    w_cobs(w, b);
}

static void w_u16(writer_t *w, uint16_t v)
{
    w_byte(w, (uint8_t)(v & 0xFFu));
    w_byte(w, (uint8_t)(v >> 8));
}

static void w_u32(writer_t *w, uint32_t v)
{
    for (int k = 0; k < 4; k++) {
        w_byte(w, (uint8_t)(v >> (8 * k)));
    }
}

static void w_f32(writer_t *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, sizeof v); /* IEEE-754 binary32, sent little-endian like every other field */
    w_u32(w, v);
}

static void w_begin(writer_t *w, uint8_t *out, size_t cap, const egb_header_t *h)
{
    w->out = out;
    w->cap = cap;
    w->pos = 0;
    w->crc = 0xFFFFFFFFu;
    w->overflow = 0;
    w_open_block(w);
    w_byte(w, EGB_PROTOCOL_VERSION);
    w_byte(w, h->type);
    w_byte(w, h->sensor);
    w_byte(w, h->format);
    w_u16(w, h->seq);
    w_u32(w, h->t_us);
    w_u16(w, h->count);
}

static size_t w_end(writer_t *w)
{
    uint32_t crc = w->crc ^ 0xFFFFFFFFu;
    for (int k = 0; k < 4; k++) {
        w_cobs(w, (uint8_t)(crc >> (8 * k)));
    }
    w_close_block(w);
    w_raw(w, 0x00); /* frame delimiter */
    return w->overflow ? 0 : w->pos;
}

static egb_header_t header(uint8_t type, uint8_t sensor, uint8_t format, uint16_t seq, uint32_t t_us,
                           uint16_t count)
{
    egb_header_t h;
    h.version = EGB_PROTOCOL_VERSION;
    h.type = type;
    h.sensor = sensor;
    h.format = format;
    h.seq = seq;
    h.t_us = t_us;
    h.count = count;
    return h;
}

size_t egb_encode_frame(const egb_header_t *h, const uint8_t *payload, size_t n, uint8_t *out, size_t cap)
{
    writer_t w;
    if (n > EGB_MAX_PAYLOAD) {
        return 0;
    }
    w_begin(&w, out, cap, h);
    for (size_t i = 0; i < n; i++) {
        w_byte(&w, payload[i]);
    }
    return w_end(&w);
}

static size_t bounded_strlen(const char *s, size_t max)
{
    size_t n = 0;
    while (s != NULL && n < max && s[n] != '\0') {
        n++;
    }
    return n;
}

size_t egb_encode_descriptor(uint16_t seq, uint32_t t_us, uint8_t sensor, uint8_t kind, uint8_t channels,
                             uint8_t format, float rate_hz, float scale, const char *name, const char *units,
                             uint8_t *out, size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_DESCRIPTOR, sensor, EGB_NONE, seq, t_us, 0);
    size_t name_len = bounded_strlen(name, 255);
    size_t units_len = bounded_strlen(units, 255);
    w_begin(&w, out, cap, &h);
    w_byte(&w, kind);
    w_byte(&w, channels);
    w_byte(&w, format);
    w_byte(&w, 0); /* reserved */
    w_f32(&w, rate_hz);
    w_f32(&w, scale);
    w_byte(&w, (uint8_t)name_len);
    for (size_t i = 0; i < name_len; i++) {
        w_byte(&w, (uint8_t)name[i]);
    }
    w_byte(&w, (uint8_t)units_len);
    for (size_t i = 0; i < units_len; i++) {
        w_byte(&w, (uint8_t)units[i]);
    }
    return w_end(&w);
}

static int samples_fit(uint16_t count, uint8_t channels, size_t bytes_per_value)
{
    return (size_t)count * channels * bytes_per_value <= EGB_MAX_PAYLOAD;
}

size_t egb_encode_samples_i16(uint16_t seq, uint32_t t_us, uint8_t sensor, const int16_t *values, uint16_t count,
                              uint8_t channels, uint8_t *out, size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_SAMPLES, sensor, EGB_INT16, seq, t_us, count);
    if (!samples_fit(count, channels, 2)) {
        return 0;
    }
    w_begin(&w, out, cap, &h);
    for (size_t i = 0; i < (size_t)count * channels; i++) {
        w_u16(&w, (uint16_t)values[i]);
    }
    return w_end(&w);
}

size_t egb_encode_samples_i32(uint16_t seq, uint32_t t_us, uint8_t sensor, const int32_t *values, uint16_t count,
                              uint8_t channels, uint8_t *out, size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_SAMPLES, sensor, EGB_INT32, seq, t_us, count);
    if (!samples_fit(count, channels, 4)) {
        return 0;
    }
    w_begin(&w, out, cap, &h);
    for (size_t i = 0; i < (size_t)count * channels; i++) {
        w_u32(&w, (uint32_t)values[i]);
    }
    return w_end(&w);
}

size_t egb_encode_samples_f32(uint16_t seq, uint32_t t_us, uint8_t sensor, const float *values, uint16_t count,
                              uint8_t channels, uint8_t *out, size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_SAMPLES, sensor, EGB_FLOAT32, seq, t_us, count);
    if (!samples_fit(count, channels, 4)) {
        return 0;
    }
    w_begin(&w, out, cap, &h);
    for (size_t i = 0; i < (size_t)count * channels; i++) {
        w_f32(&w, values[i]);
    }
    return w_end(&w);
}

size_t egb_encode_time_sync(uint16_t seq, uint32_t t_us, uint32_t epoch, uint8_t *out, size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_TIME_SYNC, 0, EGB_NONE, seq, t_us, 0);
    w_begin(&w, out, cap, &h);
    w_u32(&w, epoch);
    return w_end(&w);
}

size_t egb_encode_heartbeat(uint16_t seq, uint32_t t_us, uint32_t tx_overruns, uint8_t *out, size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_HEARTBEAT, 0, EGB_NONE, seq, t_us, 0);
    w_begin(&w, out, cap, &h);
    w_u32(&w, tx_overruns);
    return w_end(&w);
}

size_t egb_encode_log(uint16_t seq, uint32_t t_us, uint8_t level, const char *text, uint8_t *out, size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_LOG, 0, EGB_NONE, seq, t_us, 0);
    size_t n = bounded_strlen(text, EGB_MAX_PAYLOAD - 1);
    w_begin(&w, out, cap, &h);
    w_byte(&w, level);
    for (size_t i = 0; i < n; i++) {
        w_byte(&w, (uint8_t)text[i]);
    }
    return w_end(&w);
}

size_t egb_encode_command(uint16_t seq, uint32_t t_us, uint8_t sensor, uint8_t command, float value, uint8_t *out,
                          size_t cap)
{
    writer_t w;
    egb_header_t h = header(EGB_COMMAND, sensor, EGB_NONE, seq, t_us, 0);
    w_begin(&w, out, cap, &h);
    w_byte(&w, command);
    w_f32(&w, value);
    return w_end(&w);
}

/* ------------------------------------------------------------------ decoding (host -> MCU commands) */

static uint32_t rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

int egb_decode_frame(uint8_t *buf, size_t len, egb_header_t *h, const uint8_t **payload, size_t *n)
{
    /* In-place COBS decode: the write index never passes the read index. */
    size_t r = 0, wr = 0;
    while (r < len) {
        uint8_t code = buf[r];
        if (code == 0 || r + code > len) {
            return -1;
        }
        for (size_t k = 1; k < code; k++) {
            buf[wr++] = buf[r + k];
        }
        r += code;
        if (code != 0xFF && r < len) {
            buf[wr++] = 0;
        }
    }
    if (wr < EGB_HEADER_SIZE + EGB_CRC_SIZE) {
        return -1;
    }
    if (egb_crc32(buf, wr - EGB_CRC_SIZE) != rd_u32(buf + wr - EGB_CRC_SIZE)) {
        return -2;
    }
    if (buf[0] != EGB_PROTOCOL_VERSION) {
        return -3;
    }
    h->version = buf[0];
    h->type = buf[1];
    h->sensor = buf[2];
    h->format = buf[3];
    h->seq = (uint16_t)(buf[4] | (buf[5] << 8));
    h->t_us = rd_u32(buf + 6);
    h->count = (uint16_t)(buf[10] | (buf[11] << 8));
    *payload = buf + EGB_HEADER_SIZE;
    *n = wr - EGB_HEADER_SIZE - EGB_CRC_SIZE;
    return 0;
}

int egb_parse_command(const uint8_t *payload, size_t n, uint8_t *command, float *value)
{
    uint32_t bits;
    if (n < 5) {
        return -1;
    }
    *command = payload[0];
    bits = rd_u32(payload + 1);
    memcpy(value, &bits, sizeof *value);
    return 0;
}

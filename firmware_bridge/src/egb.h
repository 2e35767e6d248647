/* edge-gmm bridge (egb): encode MCU -> host frames into a caller's buffer.
 *
 * C99, no malloc, no stdio, no floating-point math beyond copying float bits. See PROTOCOL.md.
 * Every egb_encode_* returns the number of bytes written to `out` (COBS-encoded body plus the 0x00
 * delimiter), or 0 when `cap` is too small; nothing is sent half-written.
 */
#ifndef EGB_H
#define EGB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EGB_PROTOCOL_VERSION 1u
#define EGB_HEADER_SIZE 12u
#define EGB_CRC_SIZE 4u
#define EGB_MAX_PAYLOAD 2048u
#define EGB_ALL_SENSORS 0xFFu
/* Worst-case bytes on the wire for a payload of n bytes (COBS overhead + delimiter). */
#define EGB_FRAME_CAP(n) ((EGB_HEADER_SIZE + (n) + EGB_CRC_SIZE) + (EGB_HEADER_SIZE + (n) + EGB_CRC_SIZE) / 254u + 2u)

enum egb_type {
    EGB_DESCRIPTOR = 1,
    EGB_SAMPLES = 2,
    EGB_TIME_SYNC = 3,
    EGB_HEARTBEAT = 4,
    EGB_LOG = 5,
    EGB_COMMAND = 16
};

enum egb_format { EGB_NONE = 0, EGB_INT16 = 1, EGB_INT32 = 2, EGB_FLOAT32 = 3 };

enum egb_kind { EGB_KIND_IMU = 0, EGB_KIND_TIMESERIES = 1, EGB_KIND_AUDIO = 2 };

enum egb_command { EGB_CMD_START = 1, EGB_CMD_STOP = 2, EGB_CMD_SET_RATE = 3, EGB_CMD_DESCRIBE = 4 };

typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t sensor;
    uint8_t format;
    uint16_t seq;
    uint32_t t_us;
    uint16_t count;
} egb_header_t;

uint32_t egb_crc32(const uint8_t *data, size_t len);

/* Generic: header (version is filled in) + raw payload bytes. */
size_t egb_encode_frame(const egb_header_t *h, const uint8_t *payload, size_t n, uint8_t *out, size_t cap);

size_t egb_encode_descriptor(uint16_t seq, uint32_t t_us, uint8_t sensor, uint8_t kind, uint8_t channels,
                             uint8_t format, float rate_hz, float scale, const char *name, const char *units,
                             uint8_t *out, size_t cap);
/* values: count samples x channels values, sample-major (s0c0 s0c1 ... s1c0 ...). t_us = first sample's time. */
size_t egb_encode_samples_i16(uint16_t seq, uint32_t t_us, uint8_t sensor, const int16_t *values, uint16_t count,
                              uint8_t channels, uint8_t *out, size_t cap);
size_t egb_encode_samples_i32(uint16_t seq, uint32_t t_us, uint8_t sensor, const int32_t *values, uint16_t count,
                              uint8_t channels, uint8_t *out, size_t cap);
size_t egb_encode_samples_f32(uint16_t seq, uint32_t t_us, uint8_t sensor, const float *values, uint16_t count,
                              uint8_t channels, uint8_t *out, size_t cap);
size_t egb_encode_time_sync(uint16_t seq, uint32_t t_us, uint32_t epoch, uint8_t *out, size_t cap);
size_t egb_encode_heartbeat(uint16_t seq, uint32_t t_us, uint32_t tx_overruns, uint8_t *out, size_t cap);
size_t egb_encode_log(uint16_t seq, uint32_t t_us, uint8_t level, const char *text, uint8_t *out, size_t cap);
size_t egb_encode_command(uint16_t seq, uint32_t t_us, uint8_t sensor, uint8_t command, float value, uint8_t *out,
                          size_t cap);

/* Host -> MCU: decode one received piece (the bytes before a 0x00, delimiter excluded) IN PLACE.
 * Returns 0 and fills h/payload/n on success; -1 bad COBS or length, -2 bad CRC, -3 unknown version. */
int egb_decode_frame(uint8_t *buf, size_t len, egb_header_t *h, const uint8_t **payload, size_t *n);
/* Parse a COMMAND payload. Returns 0 on success, -1 when too short. */
int egb_parse_command(const uint8_t *payload, size_t n, uint8_t *command, float *value);

#ifdef __cplusplus
}
#endif
#endif

/* Host test program: encode every frame of a shared vector file with the C library and print
 * "NAME HEX" per frame, so the Python tests can compare both encoders byte for byte.
 * Usage: egb_vectors vectors.txt */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egb.h"

#define MAX_VALUES 1024

typedef struct {
    char name[64];
    char type[32];
    long seq, t_us, sensor, channels, level, command, epoch, overruns;
    char kind[32], format[32], units[256], sname[64], text[512];
    double rate, scale, value;
    char values[8192];
} vector_t;

static int format_code(const char *s)
{
    if (strcmp(s, "int16") == 0) return EGB_INT16;
    if (strcmp(s, "int32") == 0) return EGB_INT32;
    if (strcmp(s, "float32") == 0) return EGB_FLOAT32;
    return -1;
}

static int kind_code(const char *s)
{
    if (strcmp(s, "imu") == 0) return EGB_KIND_IMU;
    if (strcmp(s, "timeseries") == 0) return EGB_KIND_TIMESERIES;
    if (strcmp(s, "audio") == 0) return EGB_KIND_AUDIO;
    return -1;
}

static void copy(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; i + 1 < cap && src[i] != '\0'; i++) dst[i] = src[i];
    dst[i] = '\0';
}

static void set_key(vector_t *v, const char *key, const char *val)
{
    if (!strcmp(key, "type")) copy(v->type, sizeof v->type, val);
    else if (!strcmp(key, "seq")) v->seq = strtol(val, NULL, 10);
    else if (!strcmp(key, "t_us")) v->t_us = (long)strtoul(val, NULL, 10);
    else if (!strcmp(key, "sensor")) v->sensor = strtol(val, NULL, 10);
    else if (!strcmp(key, "channels")) v->channels = strtol(val, NULL, 10);
    else if (!strcmp(key, "level")) v->level = strtol(val, NULL, 10);
    else if (!strcmp(key, "command")) v->command = strtol(val, NULL, 10);
    else if (!strcmp(key, "epoch")) v->epoch = strtol(val, NULL, 10);
    else if (!strcmp(key, "overruns")) v->overruns = strtol(val, NULL, 10);
    else if (!strcmp(key, "kind")) copy(v->kind, sizeof v->kind, val);
    else if (!strcmp(key, "format")) copy(v->format, sizeof v->format, val);
    else if (!strcmp(key, "units")) copy(v->units, sizeof v->units, val);
    else if (!strcmp(key, "name")) copy(v->sname, sizeof v->sname, val);
    else if (!strcmp(key, "text")) copy(v->text, sizeof v->text, val);
    else if (!strcmp(key, "rate")) v->rate = strtod(val, NULL);
    else if (!strcmp(key, "scale")) v->scale = strtod(val, NULL);
    else if (!strcmp(key, "value")) v->value = strtod(val, NULL);
    else if (!strcmp(key, "values")) copy(v->values, sizeof v->values, val);
    else {
        fprintf(stderr, "unknown key %s\n", key);
        exit(2);
    }
}

static size_t encode_samples(const vector_t *v, uint8_t *out, size_t cap)
{
    static int16_t i16[MAX_VALUES];
    static int32_t i32[MAX_VALUES];
    static float f32[MAX_VALUES];
    char buf[sizeof v->values];
    size_t n = 0;
    int fmt = format_code(v->format);
    copy(buf, sizeof buf, v->values);
    for (char *tok = strtok(buf, ","); tok != NULL && n < MAX_VALUES; tok = strtok(NULL, ","), n++) {
        if (fmt == EGB_INT16) i16[n] = (int16_t)strtol(tok, NULL, 10);
        if (fmt == EGB_INT32) i32[n] = (int32_t)strtoll(tok, NULL, 10);
        if (fmt == EGB_FLOAT32) f32[n] = strtof(tok, NULL);
    }
    uint16_t count = (uint16_t)(n / (size_t)v->channels);
    uint8_t ch = (uint8_t)v->channels;
    uint16_t seq = (uint16_t)v->seq;
    uint32_t t = (uint32_t)v->t_us;
    uint8_t s = (uint8_t)v->sensor;
    if (fmt == EGB_INT16) return egb_encode_samples_i16(seq, t, s, i16, count, ch, out, cap);
    if (fmt == EGB_INT32) return egb_encode_samples_i32(seq, t, s, i32, count, ch, out, cap);
    if (fmt == EGB_FLOAT32) return egb_encode_samples_f32(seq, t, s, f32, count, ch, out, cap);
    return 0;
}

static size_t encode(const vector_t *v, uint8_t *out, size_t cap)
{
    uint16_t seq = (uint16_t)v->seq;
    uint32_t t = (uint32_t)v->t_us;
    uint8_t s = (uint8_t)v->sensor;
    if (!strcmp(v->type, "descriptor"))
        return egb_encode_descriptor(seq, t, s, (uint8_t)kind_code(v->kind), (uint8_t)v->channels,
                                     (uint8_t)format_code(v->format), (float)v->rate, (float)v->scale, v->sname,
                                     v->units, out, cap);
    if (!strcmp(v->type, "samples")) return encode_samples(v, out, cap);
    if (!strcmp(v->type, "time_sync")) return egb_encode_time_sync(seq, t, (uint32_t)v->epoch, out, cap);
    if (!strcmp(v->type, "heartbeat")) return egb_encode_heartbeat(seq, t, (uint32_t)v->overruns, out, cap);
    if (!strcmp(v->type, "log")) return egb_encode_log(seq, t, (uint8_t)v->level, v->text, out, cap);
    if (!strcmp(v->type, "command"))
        return egb_encode_command(seq, t, s, (uint8_t)v->command, (float)v->value, out, cap);
    return 0;
}

/* Decode our own output back (the MCU-side parser) and check the CRC path agrees. */
static int roundtrip(uint8_t *frame, size_t len)
{
    egb_header_t h;
    const uint8_t *payload;
    size_t n;
    return egb_decode_frame(frame, len - 1, &h, &payload, &n);
}

int main(int argc, char **argv)
{
    static char line[16384];
    static uint8_t out[EGB_FRAME_CAP(EGB_MAX_PAYLOAD)];
    static vector_t v;
    if (argc != 2) {
        fprintf(stderr, "usage: %s vectors.txt\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (f == NULL) {
        perror(argv[1]);
        return 2;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') continue;
        memset(&v, 0, sizeof v);
        char *save = NULL;
        char *tok = strtok_r(line, " ", &save);
        copy(v.name, sizeof v.name, tok);
        while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
            char *eq = strchr(tok, '=');
            if (eq == NULL) continue;
            *eq = '\0';
            set_key(&v, tok, eq + 1);
        }
        size_t n = encode(&v, out, sizeof out);
        if (n == 0) {
            fprintf(stderr, "%s: encode failed\n", v.name);
            return 1;
        }
        printf("%s ", v.name);
        for (size_t i = 0; i < n; i++) printf("%02x", out[i]);
        printf("\n");
        if (roundtrip(out, n) != 0) {
            fprintf(stderr, "%s: C decoder rejected its own frame\n", v.name);
            return 1;
        }
    }
    fclose(f);
    return 0;
}

/* A desktop stand-in for an MCU: streams a simulated 6-axis IMU (200 Hz, int16) as egb frames on stdout,
 * with descriptors, time sync and heartbeats, the way examples/arduino_imu does on a board.
 * Put it behind a pty and read it with the host tools:
 *   socat pty,raw,echo=0,link=/tmp/ttyMCU EXEC:firmware_bridge/build/egb_stream &
 *   edge-gmm bridge monitor /tmp/ttyMCU
 * It answers START, STOP and DESCRIBE commands read from stdin.
 * Usage: egb_stream [SECONDS]   (default: run until killed) */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "egb.h"

#define IMU_SENSOR 1
#define IMU_RATE_HZ 200
#define SAMPLES_PER_FRAME 10
/* One scale per sensor (PROTOCOL.md): +-16 g full scale -> m/s2 per LSB; gyro counts share it here. */
#define ACC_SCALE (16.0f * 9.80665f / 32768.0f)
#define TWO_PI 6.283185307179586

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Host -> MCU commands arrive on stdin as COBS frames; an MCU would read them from its UART RX. */
static uint8_t rx[64];
static size_t rx_len = 0;
static int streaming = 1, want_descriptor = 1;

static void handle_byte(uint8_t b)
{
    egb_header_t h;
    const uint8_t *payload;
    size_t n;
    uint8_t cmd;
    float value;
    if (b != 0) {
        if (rx_len < sizeof rx) rx[rx_len++] = b;
        return;
    }
    if (egb_decode_frame(rx, rx_len, &h, &payload, &n) == 0 && h.type == EGB_COMMAND &&
        egb_parse_command(payload, n, &cmd, &value) == 0) {
        if (cmd == EGB_CMD_START) streaming = 1;
        if (cmd == EGB_CMD_STOP) streaming = 0;
        if (cmd == EGB_CMD_DESCRIBE) want_descriptor = 1;
    }
    rx_len = 0;
}

/* Wait until t_us, reading commands meanwhile. */
static void wait_until(uint64_t t_us)
{
    for (;;) {
        uint64_t n = now_us();
        if (n >= t_us) return;
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, (int)((t_us - n) / 1000u) + 1) > 0) {
            uint8_t buf[64];
            ssize_t got = read(0, buf, sizeof buf);
            if (got <= 0) { /* stdin closed: nothing more will come, just sleep */
                struct timespec ts = {(time_t)((t_us - n) / 1000000u), (long)((t_us - n) % 1000000u) * 1000L};
                nanosleep(&ts, NULL);
                return;
            }
            for (ssize_t i = 0; i < got; i++) handle_byte(buf[i]);
        }
    }
}

static int send(const uint8_t *buf, size_t n)
{
    if (n == 0) return 0;
    if (fwrite(buf, 1, n, stdout) != n) return -1;
    return fflush(stdout) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    static uint8_t out[EGB_FRAME_CAP(EGB_MAX_PAYLOAD)];
    int16_t imu[SAMPLES_PER_FRAME * 6];
    double seconds = argc > 1 ? atof(argv[1]) : 0.0;
    uint16_t seq = 0;
    uint64_t t0 = now_us(), next = t0, last_meta = 0;
    uint64_t sample = 0;
    uint32_t overruns = 0;

    for (;;) {
        uint64_t t = now_us() - t0;
        if (seconds > 0 && t >= (uint64_t)(seconds * 1e6)) break;
        if (want_descriptor || t - last_meta >= 1000000u) { /* once a second, and when asked: who I am, what time it is */
            want_descriptor = 0;
            size_t n = egb_encode_descriptor(seq++, (uint32_t)t, IMU_SENSOR, EGB_KIND_IMU, 6, EGB_INT16, IMU_RATE_HZ,
                                             ACC_SCALE, "imu", "m/s2,m/s2,m/s2,rad/s,rad/s,rad/s", out, sizeof out);
            if (send(out, n)) return 1;
            n = egb_encode_time_sync(seq++, (uint32_t)(now_us() - t0), (uint32_t)((now_us() - t0) >> 32), out, sizeof out);
            if (send(out, n)) return 1;
            n = egb_encode_heartbeat(seq++, (uint32_t)t, overruns, out, sizeof out);
            if (send(out, n)) return 1;
            last_meta = t;
        }
        next += (uint64_t)SAMPLES_PER_FRAME * 1000000u / IMU_RATE_HZ;
        if (!streaming) {
            sample += SAMPLES_PER_FRAME; /* the sensor keeps sampling; nothing is sent */
            wait_until(next);
            continue;
        }
        uint32_t first_t = (uint32_t)(sample * 1000000u / IMU_RATE_HZ);
        for (int i = 0; i < SAMPLES_PER_FRAME; i++, sample++) {
            double ts = (double)sample / IMU_RATE_HZ;
            for (int c = 0; c < 6; c++) { /* a 30 Hz vibration on each axis, gravity on z */
                double v = 2.0 * sin(TWO_PI * 30.0 * ts + c) + (c == 2 ? 9.81 : 0.0);
                imu[i * 6 + c] = (int16_t)lrint(v / ACC_SCALE);
            }
        }
        size_t n = egb_encode_samples_i16(seq++, first_t, IMU_SENSOR, imu, SAMPLES_PER_FRAME, 6, out, sizeof out);
        if (send(out, n)) return 1;
        wait_until(next);
    }
    return 0;
}

// Stream a 6-axis IMU at 200 Hz to edge-gmm as egb frames (see ../../PROTOCOL.md).
// Copy src/egb.h and src/egb.c next to this sketch. readImu() talks to an MPU-6050 over I2C;
// replace it with your sensor's driver. Host side: edge-gmm bridge monitor /dev/ttyACM0
#include <Wire.h>

extern "C" {
#include "egb.h"
}

static const uint8_t IMU_ID = 1;
static const uint16_t RATE_HZ = 200;
static const uint8_t PER_FRAME = 10;                      // 50 ms of data per frame
static const float ACC_SCALE = 16.0f * 9.80665f / 32768;  // +-16 g: m/s2 per count (gyro shares it, see PROTOCOL.md)
static const uint8_t MPU_ADDR = 0x68;

static uint8_t tx[EGB_FRAME_CAP(PER_FRAME * 6 * 2)];
static uint8_t rx[64];
static size_t rx_len = 0;
static int16_t block[PER_FRAME * 6];
static uint8_t filled = 0;
static uint16_t seq = 0;
static uint32_t first_t = 0, next_sample = 0, last_meta = 0, wraps = 0, last_micros = 0, overruns = 0;
static bool streaming = true;
static uint16_t rate_hz = RATE_HZ;

static void send(size_t n) {
  if (n == 0) return;
  if ((size_t)Serial.availableForWrite() < n && Serial.availableForWrite() > 0) overruns++;  // would block
  Serial.write(tx, n);
}

static void sendDescriptor() {
  send(egb_encode_descriptor(seq++, micros(), IMU_ID, EGB_KIND_IMU, 6, EGB_INT16, rate_hz, ACC_SCALE, "imu",
                             "m/s2,m/s2,m/s2,rad/s,rad/s,rad/s", tx, sizeof tx));
}

static void readImu(int16_t *out6) {
  Wire.beginTransmission(MPU_ADDR);
  Wire.write(0x3B);  // ACCEL_XOUT_H: accel x,y,z, temperature, gyro x,y,z, big-endian
  Wire.endTransmission(false);
  Wire.requestFrom(MPU_ADDR, (uint8_t)14);
  int16_t r[7];
  for (int i = 0; i < 7; i++) r[i] = (int16_t)((Wire.read() << 8) | Wire.read());
  out6[0] = r[0]; out6[1] = r[1]; out6[2] = r[2];
  out6[3] = r[4]; out6[4] = r[5]; out6[5] = r[6];
}

static void pollCommands() {  // host -> MCU: COBS frames ending in 0x00
  while (Serial.available()) {
    uint8_t b = Serial.read();
    if (b != 0) {
      if (rx_len < sizeof rx) rx[rx_len++] = b;
      continue;
    }
    egb_header_t h;
    const uint8_t *p;
    size_t n;
    uint8_t cmd;
    float value;
    if (egb_decode_frame(rx, rx_len, &h, &p, &n) == 0 && h.type == EGB_COMMAND && egb_parse_command(p, n, &cmd, &value) == 0) {
      if (cmd == EGB_CMD_START) streaming = true;
      if (cmd == EGB_CMD_STOP) streaming = false;
      if (cmd == EGB_CMD_SET_RATE && value >= 1 && value <= 1000) { rate_hz = (uint16_t)value; sendDescriptor(); }
      if (cmd == EGB_CMD_DESCRIBE) sendDescriptor();
    }
    rx_len = 0;
  }
}

void setup() {
  Serial.begin(921600);
  Wire.begin();
  Wire.setClock(400000);
  Wire.beginTransmission(MPU_ADDR);
  Wire.write(0x6B); Wire.write(0);  // wake up
  Wire.endTransmission();
  Wire.beginTransmission(MPU_ADDR);
  Wire.write(0x1C); Wire.write(0x18);  // accel +-16 g
  Wire.endTransmission();
  Serial.write((uint8_t)0);  // flush any partial frame on the host side
  sendDescriptor();
  next_sample = micros();
}

void loop() {
  uint32_t now = micros();
  if (now < last_micros) wraps++;  // the 32-bit microsecond counter wrapped
  last_micros = now;
  pollCommands();
  if (now - last_meta >= 500000UL) {  // twice a second: time sync; every other time: descriptor + heartbeat
    send(egb_encode_time_sync(seq++, now, wraps, tx, sizeof tx));
    static bool odd = false;
    if ((odd = !odd)) {
      sendDescriptor();
      send(egb_encode_heartbeat(seq++, now, overruns, tx, sizeof tx));
    }
    last_meta = now;
  }
  if (!streaming || (int32_t)(now - next_sample) < 0) return;
  if (filled == 0) first_t = next_sample;
  readImu(&block[filled * 6]);
  next_sample += 1000000UL / rate_hz;
  if (++filled == PER_FRAME) {
    send(egb_encode_samples_i16(seq++, first_t, IMU_ID, block, PER_FRAME, 6, tx, sizeof tx));
    filled = 0;
  }
}

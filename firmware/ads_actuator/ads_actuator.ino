// ads_actuator: the reference firmware of the ads serial actuator board (docs/actuators.md).
//
// Plain Arduino C++ for any board with the Servo library (Arduino Uno/Nano/Leonardo, RP2040
// with the arduino-pico core, ESP32 with ESP32Servo in place of Servo.h). It puts out the
// pulses the host sends, answers every line with its status, and goes to neutral BY ITSELF
// 100 ms after the last valid D or N line: a dead host, a dead process or a cut cable all
// stop the car.
//
// NOT COMPILED ANYWHERE in this repository's build or CI (no Arduino toolchain here): build
// and flash it with the Arduino IDE or arduino-cli, then check it with the steps of
// docs/actuators.md ("Checking a serial board") before the first drive.
//
// Protocol (one line each, '\n'-terminated, at most 63 characters):
//   host -> board  C <seq> <steer_us> <thr_us> *<ck>   neutral pulses used on timeout
//                  D <seq> <steer_us> <thr_us> *<ck>   drive: put out these pulses
//                  N <seq> <steer_us> <thr_us> *<ck>   stop: put out these (neutral or brake)
//   board -> host  S <seq> <status> *<ck>              status: drive | neutral | timeout | error
// <ck>: XOR of every byte before " *", two upper-case hex digits. Pulses outside 500..2500 us,
// a wrong checksum or a malformed line: the line is ignored (status error), the outputs and
// the timeout run on as before.

#include <Servo.h>
#include <stdlib.h>
#include <string.h>

static const int STEERING_PIN = 9;
static const int THROTTLE_PIN = 10;
static const unsigned long BAUD = 115200;
static const unsigned long TIMEOUT_MS = 100;
static const int MIN_US = 500;
static const int MAX_US = 2500;
static const size_t MAX_LINE = 64;

// Until the host sends C: the usual centre and neutral.
static int neutral_steer_us = 1500;
static int neutral_thr_us = 1500;

static Servo steering;
static Servo throttle;
static char line[MAX_LINE];
static size_t line_len = 0;
static bool overflow = false;
static unsigned long last_valid_ms = 0;
static bool timed_out = true;
static unsigned long acked_seq = 0;
static const char *state = "neutral";

static uint8_t checksum(const char *s, size_t n) {
  uint8_t ck = 0;
  for (size_t i = 0; i < n; i++) ck ^= (uint8_t)s[i];
  return ck;
}

static void answer(const char *status) {
  char body[40];
  snprintf(body, sizeof body, "S %lu %s", acked_seq, status);
  char out[48];
  snprintf(out, sizeof out, "%s *%02X\n", body, checksum(body, strlen(body)));
  Serial.print(out);
}

static void put_out(int steer_us, int thr_us) {
  steering.writeMicroseconds(steer_us);
  throttle.writeMicroseconds(thr_us);
}

static bool parse_pulse(const char *s, int *us) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < MIN_US || v > MAX_US) return false;
  *us = (int)v;
  return true;
}

// Handles one line (without its '\n'); returns false if it was invalid.
static bool handle(char *text) {
  size_t n = strlen(text);
  if (n > 0 && text[n - 1] == '\r') text[--n] = '\0';
  char *star = strstr(text, " *");
  if (!star || strlen(star + 2) != 2) return false;
  char *end;
  long ck = strtol(star + 2, &end, 16);
  if (*end != '\0' || ck != checksum(text, (size_t)(star - text))) return false;
  *star = '\0';
  char *fields[4];
  int count = 0;
  for (char *tok = strtok(text, " "); tok && count < 5; tok = strtok(NULL, " ")) {
    if (count == 4) return false;
    fields[count++] = tok;
  }
  if (count != 4 || strlen(fields[0]) != 1) return false;
  char *seq_end;
  unsigned long seq = strtoul(fields[1], &seq_end, 10);
  if (seq_end == fields[1] || *seq_end != '\0') return false;
  int steer_us, thr_us;
  if (!parse_pulse(fields[2], &steer_us) || !parse_pulse(fields[3], &thr_us)) return false;
  switch (fields[0][0]) {
    case 'C':
      neutral_steer_us = steer_us;
      neutral_thr_us = thr_us;
      if (timed_out) put_out(neutral_steer_us, neutral_thr_us);
      break;
    case 'D':
    case 'N':
      put_out(steer_us, thr_us);
      last_valid_ms = millis();
      timed_out = false;
      state = fields[0][0] == 'D' ? "drive" : "neutral";
      break;
    default:
      return false;
  }
  acked_seq = seq;
  return true;
}

void setup() {
  steering.attach(STEERING_PIN);
  throttle.attach(THROTTLE_PIN);
  put_out(neutral_steer_us, neutral_thr_us);
  Serial.begin(BAUD);
}

void loop() {
  while (Serial.available() > 0) {
    char c = (char)Serial.read();
    if (c == '\n') {
      line[line_len] = '\0';
      bool ok = !overflow && handle(line);
      answer(ok ? state : "error");
      line_len = 0;
      overflow = false;
    } else if (line_len < MAX_LINE - 1) {
      line[line_len++] = c;
    } else {
      overflow = true;
    }
  }
  // The board's own timeout: no valid D or N for 100 ms -> neutral, whatever the host does.
  if (!timed_out && millis() - last_valid_ms > TIMEOUT_MS) {
    timed_out = true;
    put_out(neutral_steer_us, neutral_thr_us);
    state = "timeout";
    answer(state);
  }
}

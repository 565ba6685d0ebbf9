#!/usr/bin/env python3
"""A fake actuator board on a pseudo-terminal, for scripts/systemd-smoke.sh.

Speaks the serial line protocol of docs/actuators.md (answers every line with `S <seq>
<status> *<ck>`, goes to its neutral 100 ms after the last valid D or N) and logs each valid
line as `<verb> <seq> <steer_us> <thr_us>`, `timeout` and `hup` (the last holder of the port
closed it) to LOG.

    fake-board.py PTY_PATH_FILE LOG      # root: writes the slave's path to PTY_PATH_FILE

A real USB serial port (/dev/ttyACM0) forgets its exclusive flag (TIOCEXCL, which the vehicle
sets) when its last holder closes it; a pty slave keeps it while the master is open, so an
unprivileged `ads-vehicle neutral` after a SIGKILL would get EBUSY from the harness, not from
the unit. The board therefore does what the real device does: when the slave side hangs up, it
clears the flag (root may open an exclusive tty; TIOCNXCL).
"""
import fcntl
import os
import select
import sys
import termios
import time


def xor(body: bytes) -> int:
    ck = 0
    for b in body:
        ck ^= b
    return ck


def parse(line: bytes):
    body, sep, ck = line.rstrip(b"\r\n").rpartition(b" *")
    if not sep:
        return None
    try:
        if int(ck, 16) != xor(body):
            return None
        verb, seq, steer, thr = body.decode().split(" ")
        if verb not in ("C", "D", "N"):
            return None
        return verb, int(seq), int(steer), int(thr)
    except ValueError:
        return None


def release_exclusive(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        fcntl.ioctl(fd, termios.TIOCNXCL)
        os.close(fd)
    except OSError as e:
        print(f"fake-board: clearing the exclusive flag of {path}: {e}", file=sys.stderr)


def main() -> None:
    pty_file, log_path = sys.argv[1], sys.argv[2]
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    # Raw, no echo: the vehicle's lines must not come back to it.
    attrs = termios.tcgetattr(master)
    attrs[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(master, termios.TCSANOW, attrs)
    os.chmod(path, 0o666)
    log = open(log_path, "a", buffering=1)
    with open(pty_file + ".tmp", "w") as f:
        f.write(path + "\n")
    os.rename(pty_file + ".tmp", pty_file)
    poll = select.poll()
    poll.register(master, select.POLLIN)
    # Someone has had the slave open since the last hang-up (seen by the lines it wrote).
    holder = False
    neutral_state, acked, last_valid, timed_out, partial = "neutral", 0, None, False, b""
    while True:
        mask = dict(poll.poll(5)).get(master, 0)
        if not timed_out and last_valid is not None and time.monotonic() - last_valid > 0.1:
            timed_out = True
            log.write("timeout\n")
        if mask & select.POLLIN:
            try:
                partial += os.read(master, 4096)
                holder = True
            except OSError:
                pass
        elif mask & select.POLLHUP:
            # Every holder has closed the port (the lines they wrote are all read).
            if holder:
                holder = False
                log.write("hup\n")
                release_exclusive(path)
            time.sleep(0.005)
        while b"\n" in partial:
            line, partial = partial.split(b"\n", 1)
            parsed = parse(line)
            state = "error"
            if parsed:
                verb, seq, steer, thr = parsed
                acked = seq
                if verb != "C":
                    last_valid, timed_out = time.monotonic(), False
                    neutral_state = "drive" if verb == "D" else "neutral"
                state = neutral_state
                log.write(f"{verb} {seq} {steer} {thr}\n")
            body = f"S {acked} {state}".encode()
            try:
                os.write(master, body + b" *%02X\n" % xor(body))
            except OSError:
                pass


if __name__ == "__main__":
    main()

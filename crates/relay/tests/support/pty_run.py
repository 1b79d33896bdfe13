"""Run a command on a pseudo-terminal (stdout and stderr both a tty), stop it with SIGTERM one second after
it printed "ready", and write everything it printed to our stdout. Used by crates/relay/tests/colour_tty.rs."""
import os, pty, sys, time, select, signal
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b""
deadline = time.time() + 60
stop_at = None
while time.time() < deadline:
    if stop_at is None and b"ready" in out:
        stop_at = time.time() + 1.0
    if stop_at is not None and time.time() > stop_at:
        os.kill(pid, signal.SIGTERM)
        stop_at = float("inf")
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
os.waitpid(pid, 0)
sys.stdout.buffer.write(out)

"""Runs a command on a pseudo-terminal, as a person at a keyboard would (see onTerminal in cli.ts).

usage: pty-run.py STEPS -- CMD [ARGS...]
  STEPS  JSON [[text to wait for, keys to type, seconds to pause first (default 0.2)], ...]: each step
         waits for its text on the screen (after the previous step's), pauses, then types its keys
Streams everything the command writes to the terminal to stdout, then a last line 'EXIT <code>'
(128 + the signal when a signal ended it). The command is killed after 30 s.
"""
import json, os, pty, select, sys, time
steps = json.loads(sys.argv[1]); cmd = sys.argv[sys.argv.index('--') + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
out, seen, i, status, deadline = b'', 0, 0, None, time.time() + 30
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b''
        out += chunk
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    if i < len(steps):
        at = out.find(steps[i][0].encode(), seen)
        if at >= 0:
            seen = at + len(steps[i][0])
            time.sleep(steps[i][2] if len(steps[i]) > 2 else 0.2)
            os.write(fd, steps[i][1].encode())
            i += 1
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
        try:
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                sys.stdout.buffer.write(chunk)
        except OSError:
            pass
        break
if status is None:
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
print('\nEXIT %d' % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)))

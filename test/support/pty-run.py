"""Runs a command on a pseudo-terminal, as a person at a keyboard would: waits for a prompt, then types.

usage: pty-run.py WAIT_FOR KEYS -- CMD [ARGS...]
  WAIT_FOR  text to wait for on the terminal before typing (e.g. 'Password')
  KEYS      what to type, with Python escapes (e.g. '\\x03' for Ctrl-C, '\\x04' for Ctrl-D)
Prints everything the command wrote to the terminal, then a last line 'EXIT <code>' (or 'SIGNAL <n>').
"""
import os, pty, select, sys, time

def main():
    wait_for, keys = sys.argv[1], sys.argv[2].encode().decode('unicode_escape').encode('latin1')
    cmd = sys.argv[sys.argv.index('--') + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    out, typed, deadline, status = b'', False, time.time() + 30, None
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not typed and wait_for.encode() in out:
            time.sleep(0.2)
            os.write(fd, keys)
            typed = True
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            try:
                while True:
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        break
                    out += chunk
            except OSError:
                pass
            break
    if status is None:
        if time.time() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode('utf8', 'replace'))
    if os.WIFSIGNALED(status):
        print('\nSIGNAL %d' % os.WTERMSIG(status))
    else:
        print('\nEXIT %d' % os.WEXITSTATUS(status))

main()

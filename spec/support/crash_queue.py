"""Crash test driver for the queue (spec/e2e/crash_spec.lua).

Starts kurir, sends a bounded batch of messages from several client
threads, SIGKILLs kurir several times while they send, restarts it on the
same port and queue, waits until the queue is empty, and checks that every
message that got a 250 was delivered exactly once (by Message-ID), and that
nothing partial or unknown appears in the mboxes.

usage: crash_queue.py KURIR SCRIPT DIR PORT MESSAGES THREADS KILLS
(PORT 0: the first kurir binds an ephemeral port, named in its listening
log line; the restarts take the same port)
"""
import hashlib, json, mailbox, os, signal, smtplib, socket, subprocess, sys, threading, time

kurir, script, d, port, total, nthreads, kills = sys.argv[1:8]
port, total, nthreads, kills = int(port), int(total), int(nthreads), int(kills)
deadline = time.time() + float(os.environ.get("CRASH_DEADLINE", "50"))
log = open(os.path.join(d, "kurir.log"), "ab")


def start():
    global port
    p = subprocess.Popen([kurir, "-l", "127.0.0.1:%d" % port, script, d], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL)
    while port == 0 and time.time() < deadline:
        text = open(os.path.join(d, "kurir.log"), "rb").read().decode("utf-8", "replace")
        found = [l for l in text.splitlines() if "event=listening" in l]
        if found:
            port = int(found[-1].split("port=")[1].split()[0]) if "port=" in found[-1] else \
                int(found[-1].rsplit(":", 1)[1])
            break
        if p.poll() is not None:
            sys.exit("kurir exited with %s at start" % p.returncode)
        time.sleep(0.02)
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return p
        except OSError:
            if p.poll() is not None:
                sys.exit("kurir exited with %s at start" % p.returncode)
            time.sleep(0.02)
    sys.exit("kurir did not listen")


lock = threading.Lock()
acked, sent = set(), set()
tries = {}   # Message-ID -> times it was handed to kurir (a retry after a kill may duplicate it)
counter = iter(range(total))


def body(mid):
    text = ("line of %s " % mid) * 40
    return text, hashlib.sha256(text.encode()).hexdigest()


def worker(t):
    c = None
    while time.time() < deadline:
        with lock:
            i = next(counter, None)
        if i is None:
            break
        mid = "<crash-%d@e2e.test>" % i
        text, digest = body(mid)
        msg = "Message-ID: %s\r\nX-Digest: %s\r\nSubject: %d\r\n\r\n%s\r\n" % (mid, digest, i, text)
        rcpt = "u%d@mbox.test" % (i % 5)
        with lock:
            sent.add(mid)
        for _ in range(2):
            try:
                if c is None:
                    c = smtplib.SMTP("127.0.0.1", port, timeout=10)
                with lock:
                    tries[mid] = tries.get(mid, 0) + 1
                c.sendmail("s@src.test", [rcpt], msg)
                with lock:
                    acked.add(mid)
                break
            except (OSError, smtplib.SMTPException):
                try:
                    if c:
                        c.close()
                except OSError:
                    pass
                c = None
                time.sleep(0.05)
    if c:
        try:
            c.quit()
        except (OSError, smtplib.SMTPException):
            pass


p = start()
threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
for th in threads:
    th.start()
done_kills = 0
while done_kills < kills and time.time() < deadline and any(th.is_alive() for th in threads):
    with lock:
        n = len(sent)
    if n >= (done_kills + 1) * total // (kills + 1):
        p.send_signal(signal.SIGKILL)
        p.wait()
        done_kills += 1
        p = start()
    else:
        time.sleep(0.01)
for th in threads:
    th.join(max(0.1, deadline - time.time()))

# let the queue drain, then stop cleanly
qdir = os.path.join(d, "queue")
while time.time() < deadline:
    out = subprocess.run([kurir, "queue", "list", "--json", "--spool", qdir], capture_output=True, text=True)
    if out.returncode == 0 and json.loads(out.stdout) == []:
        break
    time.sleep(0.1)
p.send_signal(signal.SIGTERM)
p.wait(timeout=20)

seen = {}
for i in range(5):
    path = os.path.join(d, "mbox", "u%d" % i)
    if not os.path.exists(path):
        continue
    for m in mailbox.mbox(path):
        mid = m["Message-ID"]
        text = m.get_payload().rstrip("\n")
        if mid not in sent:
            sys.exit("unknown message %r in u%d" % (mid, i))
        if hashlib.sha256(text.encode()).hexdigest() != m["X-Digest"]:
            sys.exit("partial or damaged message %s" % mid)
        seen[mid] = seen.get(mid, 0) + 1

missing = sorted(acked - set(seen))
# More copies than the client handed over: a real duplicate. A message the
# client sent again after a kill cut it off may be there twice: that is the
# at-least-once window (committed, 250 not received), README "Durability".
dups = sorted(k for k, v in seen.items() if v > tries.get(k, 0))
retried = sum(1 for k, v in seen.items() if v > 1)
left = json.loads(subprocess.run([kurir, "queue", "list", "--json", "--spool", qdir], capture_output=True,
                                 text=True).stdout or "[]")
print("sent=%d acked=%d delivered=%d kills=%d missing=%d duplicates=%d resent_twice=%d queued=%d" %
      (len(sent), len(acked), len(seen), done_kills, len(missing), len(dups), retried, len(left)))
if time.time() >= deadline:
    sys.exit("deadline passed")
if missing or dups or left or done_kills < kills or len(acked) < total * 0.5:
    sys.exit("FAILED missing=%s duplicates=%s" % (missing[:5], dups[:5]))
print("ok")

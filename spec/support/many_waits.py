"""many_waits.py PORT N PATH TIMEOUT - open N concurrent HTTP requests for
PATH on 127.0.0.1:PORT, print "sent" once every request is written, then
read every answer (bounded by TIMEOUT seconds) and print one line:
"STATUS=COUNT ..." per HTTP status seen, "failed=COUNT" for connections
that could not connect or broke (those still waiting at TIMEOUT are in
no status at all)."""
import asyncio
import resource
import sys
from collections import Counter


async def one(port, path, results):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        results["failed"] += 1
        return None
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def answer(conn, results):
    reader, writer = conn
    try:
        line = await reader.readline()
        parts = line.split()
        results[parts[1].decode() if len(parts) > 1 else "failed"] += 1
        await reader.read()
    except OSError:
        results["failed"] += 1
    finally:
        writer.close()


async def main():
    port, n, path, timeout = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
    results = Counter()
    conns = []
    for i in range(0, n, 500):
        batch = await asyncio.gather(*(one(port, path, results) for _ in range(min(500, n - i))))
        conns.extend(c for c in batch if c)
    print("sent", flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(*(answer(c, results) for c in conns)), timeout)
    except asyncio.TimeoutError:
        pass
    print(" ".join(f"{k}={v}" for k, v in sorted(results.items())), flush=True)


asyncio.run(main())

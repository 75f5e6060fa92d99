#!/usr/bin/python3
"""Where a process's main heap goes: walks glibc's main arena (the [heap]
mapping) of PID from outside, reading only resident pages (reading the
others through /proc/PID/mem would make them resident), and prints the
heap's size, its resident part, the bytes of in-use chunks on resident
pages, the chunk sizes that hold the most, and how many resident pages
hold in-use chunks of the given sizes only (the pages that would be free
if objects of those sizes were allocated elsewhere).

    bench/heapwalk.py PID [SIZE,SIZE...] ...

Run as root (ptrace access). Chunks in glibc's tcache and fastbins are
free but look in use from outside (their next chunk's PREV_INUSE bit is
set), so in-use figures are upper bounds. Used by bench/peers.sh
(HEAPWALK=1) on one worker of each hold; not part of sluice.
"""
import collections
import struct
import sys

PAGE = 4096


def main():
    pid = int(sys.argv[1])
    groups = [[int(x) for x in a.split(',')] for a in sys.argv[2:]]
    start = end = None
    for line in open(f'/proc/{pid}/maps'):
        if line.rstrip().endswith('[heap]'):
            a, b = (int(x, 16) for x in line.split()[0].split('-'))
            start = a if start is None else start
            end = b
    if start is None:
        sys.exit(f'heapwalk: no [heap] in /proc/{pid}/maps')
    npages = (end - start) // PAGE
    with open(f'/proc/{pid}/pagemap', 'rb', 0) as pm:
        pm.seek(start // PAGE * 8)
        raw = pm.read(npages * 8)
    present = [(struct.unpack_from('<Q', raw, i * 8)[0] >> 63) & 1
               for i in range(npages)]
    data = bytearray(end - start)
    with open(f'/proc/{pid}/mem', 'rb', 0) as mem:
        for i in range(npages):
            if present[i]:
                mem.seek(start + i * PAGE)
                data[i * PAGE:(i + 1) * PAGE] = mem.read(PAGE)
    chunks = []
    off = 0
    while off + 16 <= len(data):
        size = struct.unpack_from('<Q', data, off + 8)[0] & ~7
        if size == 0 or off + size > len(data):
            break
        chunks.append((off, size))
        off += size
    used_on = collections.Counter()
    sizes_on = collections.defaultdict(set)
    count = collections.Counter()
    for i in range(len(chunks) - 1):
        off, size = chunks[i]
        if not struct.unpack_from('<Q', data, chunks[i + 1][0] + 8)[0] & 1:
            continue  # free: the next chunk's PREV_INUSE bit is clear
        count[size] += 1
        for p in range(off // PAGE, (off + size - 1) // PAGE + 1):
            used_on[p] += min(off + size, (p + 1) * PAGE) - max(off, p * PAGE)
            sizes_on[p].add(size)
    resident = [p for p in range(npages) if present[p]]
    used = sum(used_on[p] for p in resident)
    print(f'heap {npages * 4} KiB, resident {len(resident) * 4} KiB, '
          f'in-use chunk bytes on resident pages {used // 1024} KiB, '
          f'resident pages without an in-use chunk {sum(1 for p in resident if not used_on[p])}')
    top = sorted(count, key=lambda s: -s * count[s])[:12]
    print('chunk size x count (KiB): ' + ', '.join(
        f'{s} x {count[s]} ({s * count[s] // 1024})' for s in top))
    for g in groups:
        n = sum(1 for p in resident if sizes_on[p] and sizes_on[p] <= set(g))
        print(f'resident pages holding only chunks of sizes {g}: {n} ({n * 4} KiB)')


main()

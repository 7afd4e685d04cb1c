#!/usr/bin/env python3
"""Prints 'N passed, N failed' (', N skipped' when any) from a meson testlog.json.
Exits non-zero when the log is missing or holds no test."""
import json
import sys

PASS = {'OK', 'EXPECTEDFAIL'}
SKIP = {'SKIP'}

passed = failed = skipped = 0
try:
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.strip():
                continue
            result = json.loads(line).get('result')
            if result in PASS:
                passed += 1
            elif result in SKIP:
                skipped += 1
            else:
                failed += 1
except OSError as e:
    print(f'no test log: {e}')
    print('0 passed, 1 failed')
    sys.exit(1)
line = f'{passed} passed, {failed} failed'
if skipped:
    line += f', {skipped} skipped'
print(line)
sys.exit(0 if passed + failed > 0 else 1)

#!/usr/bin/env python3
"""Prints 'N passed, N failed' (', N skipped' when any) over one or more meson testlog.json
files. A missing log counts as one failed test. Exits non-zero when no log holds a test."""
import json
import sys

PASS = {'OK', 'EXPECTEDFAIL'}
SKIP = {'SKIP'}

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        with open(path) as f:
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
        failed += 1
line = f'{passed} passed, {failed} failed'
if skipped:
    line += f', {skipped} skipped'
print(line)
sys.exit(0 if passed + failed > 0 else 1)

#!/usr/bin/env python3
"""Prints 'N passed, N failed' (', N skipped' when any) over meson testlog.json files and pytest
JUnit reports (*.xml). A missing log counts as one failed test. Exits non-zero when no log holds a
test."""
import json
import sys
import xml.etree.ElementTree as ET

PASS = {'OK', 'EXPECTEDFAIL'}
SKIP = {'SKIP'}

passed = failed = skipped = 0


def junit(path):
    """(passed, failed, skipped) of a JUnit report: a testcase holding <failure> or <error>
    failed, one holding <skipped> was skipped."""
    counts = [0, 0, 0]
    for case in ET.parse(path).getroot().iter('testcase'):
        tags = {child.tag for child in case}
        counts[1 if tags & {'failure', 'error'} else 2 if 'skipped' in tags else 0] += 1
    return counts


for path in sys.argv[1:]:
    try:
        if path.endswith('.xml'):
            p, f_, s_ = junit(path)
            passed, failed, skipped = passed + p, failed + f_, skipped + s_
            continue
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
    except (OSError, ET.ParseError) as e:
        print(f'no test log: {e}')
        failed += 1
line = f'{passed} passed, {failed} failed'
if skipped:
    line += f', {skipped} skipped'
print(line)
sys.exit(0 if passed + failed > 0 else 1)

/**
 * repeatedMembersIn (apps/api/src/json-body.ts): a JSON body that gives a member twice in one
 * object is refused, since JSON.parse keeps the last silently. Properties over random JSON: no
 * false alarm on any serialized value, and a member repeated anywhere is found at its path.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { repeatedMembersIn } from '@connect/api';

// Names and strings with quotes, backslashes, escapes and astral characters: the scanner's hard cases.
const text = fc.oneof(fc.string({ unit: 'grapheme', maxLength: 8 }), fc.constantFrom('"', '\\', '\\"', 'a"b', '\u0061', '}', ']', ',', '{', '𝄞'));
const json = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, fc.constant(null), fc.boolean(), fc.double({ noNaN: true, noDefaultInfinity: true }), text, tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 4 }),
  object: fc.dictionary(text, tie('value'), { maxKeys: 4 }),
})).value;

describe('repeatedMembersIn', () => {
  it('finds nothing in any serialized JSON value (its members are distinct by construction)', () => {
    fc.assert(fc.property(json, (v) => {
        expect(repeatedMembersIn(JSON.stringify(v))).toEqual([]);
      }), { numRuns: 500 });
  });

  it('finds a member given twice at its path, however the name is escaped, wherever it sits', () => {
    fc.assert(
      fc.property(fc.dictionary(text, json, { maxKeys: 3 }), text, fc.array(fc.nat(3), { maxLength: 3 }), (others, name, route) => {
        // The repeated pair, spelled once plainly and once with every character \u-escaped.
        const escaped = `"${Array.from({ length: name.length }, (_, i) => `\\u${name.charCodeAt(i).toString(16).padStart(4, '0')}`).join('')}"`;
        const rest = Object.entries(others).filter(([k]) => k !== name).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
        let body = `{${[...rest, `${JSON.stringify(name)}:1`, `${escaped}:2`].join(',')}}`;
        // Nested under objects and arrays: the path names each step.
        const path: string[] = [name];
        for (const step of route) {
          if (step % 2 === 0) {
            body = `{"k${step}":${body}}`;
            path.unshift(`k${step}`);
          } else {
            body = `[${Array.from({ length: step }, () => 'null').join(',')}${step ? ',' : ''}${body}]`;
            path.unshift(String(step));
          }
        }
        expect(JSON.parse(body)).toBeTruthy();
        expect(repeatedMembersIn(body)).toEqual([{ path: path.join('.'), message: 'is given more than once' }]);
      }),
      { numRuns: 300 },
    );
  });

  it('a path as a reply may quote it: at most 200 characters, a lone surrogate shown as U+FFFD (a long name repeated made a 60 KB body answer 600 KB)', () => {
    const long = 'k'.repeat(5000);
    const [found] = repeatedMembersIn(`{"${long}":{"a":1,"a":2}}`);
    expect(found!.path).toHaveLength(200);
    expect(repeatedMembersIn('{"\\ud800":1,"\\ud800":2}')).toEqual([{ path: '\uFFFD', message: 'is given more than once' }]);
  });

  it('names each repeated member once, in objects side by side', () => {
    expect(repeatedMembersIn('{"a":{"x":1,"x":2,"x":3},"b":[{"y":1},{"y":2,"y":3}],"a":0}')).toEqual([
      { path: 'a.x', message: 'is given more than once' },
      { path: 'b.1.y', message: 'is given more than once' },
      { path: 'a', message: 'is given more than once' },
    ]);
  });

  it('a body nested 16,000 deep repeating one name 5,000 times (62 KB): found once, its path cut at 200 characters (built from every open level at each repeat, it held the event loop 18 s)', () => {
    const body = '['.repeat(16_000) + '{' + '"a":0,'.repeat(5_000) + '"a":0}' + ']'.repeat(16_000);
    const found = repeatedMembersIn(body);
    expect(found).toEqual([{ path: `${'0.'.repeat(100)}`.slice(0, 200), message: 'is given more than once' }]);
    // Objects as deep as that: each level's name is on the path, as far as it goes.
    const objects = '{"k":'.repeat(16_000) + '{' + '"a":0,'.repeat(5_000) + '"a":0}' + '}'.repeat(16_000);
    expect(repeatedMembersIn(objects)).toEqual([{ path: 'k.'.repeat(100).slice(0, 200), message: 'is given more than once' }]);
  });
});

import type { FieldError } from './domain-errors.ts';

/**
 * Scans of a JSON text for what JSON.parse lets through silently: a member named `__proto__` (or
 * `constructor` holding `prototype`), and a member given twice in one object. The API refuses
 * both in a request body, and the bulk importer in an NDJSON row, with the same paths and words.
 */

interface PathNode {
  key: string;
  parent: PathNode | undefined;
}

function textOf(node: PathNode): string {
  const keys: string[] = [];
  for (let n: PathNode | undefined = node; n; n = n.parent) keys.push(n.key);
  return keys.reverse().join('.');
}

/**
 * Where a body holds `__proto__`, or `constructor` holding `prototype`: the
 * members Fastify's JSON parser refuses so that they can never reach an object's
 * prototype. The native parser keeps them as plain own members, so walking its
 * result is safe. Empty when the body is not JSON at all. Iterative: bodies may nest deeply.
 */
export function prototypeMembersIn(json: string, max = 10): FieldError[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return [];
  }
  const out: FieldError[] = [];
  // Paths as parent links, built into text only when reported: a deep body costs its size, not its depth squared.
  const stack: [unknown, PathNode | undefined][] = [[parsed, undefined]];
  while (stack.length > 0 && out.length < max) {
    const [value, path] = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    for (const [key, child] of Object.entries(value)) {
      const here = { key, parent: path };
      const isPrototype = key === '__proto__' || (key === 'constructor' && child !== null && typeof child === 'object' && Object.hasOwn(child, 'prototype'));
      if (isPrototype) out.push({ path: textOf(here), message: 'unknown member' });
      else stack.push([child, here]);
    }
  }
  return out;
}

/** How much of a path a reply quotes; longer paths are cut there. */
const PATH_CHARS = 200;

/** `prefix.segment`, cut at PATH_CHARS: a deep body's paths cost their cut length, not their depth. */
function joinPath(prefix: string, segment: string): string {
  if (prefix.length >= PATH_CHARS) return prefix;
  const path = prefix === '' ? segment : `${prefix}.${segment}`;
  return path.length > PATH_CHARS ? path.slice(0, PATH_CHARS) : path;
}

interface Frame {
  /** The path of this object or array (cut at PATH_CHARS), made when it opens. */
  prefix: string;
  /** The member names seen so far in an object; null in an array. */
  names: Set<string> | null;
  /** The current member's name (objects) or index (arrays), for the path of what is inside it. */
  at: string;
  index: number;
  expectName: boolean;
}

/**
 * Where a body gives one member twice in the same object (`{"id":"a","id":"b"}`): JSON.parse keeps
 * the last silently, so the request acted on is not the one a proxy, a log or a reviewer reading
 * the first would see. RFC 8259 §4 leaves such a body's meaning undefined; here it is refused,
 * naming the member (the token endpoint already refused a form parameter given twice, RFC 6749 §3.2).
 * `json` must be valid JSON (it is scanned only after JSON.parse took it): one linear pass over
 * its text, names decoded only when they hold an escape (`"a"` and `"\u0061"` are one name).
 */
export function repeatedMembersIn(json: string, max = 10): FieldError[] {
  const out: FieldError[] = [];
  const reported = new Set<string>();
  const frames: Frame[] = [];
  // As a reply may quote it: at most PATH_CHARS characters, lone surrogates shown as U+FFFD (as
  // malformedStringsIn does). Each frame carries its own path, made once when it opens: building it
  // from every open frame at each repeated name cost the depth times the repeats (a 60 KB body of
  // 16,000 brackets and 5,000 repeats held the event loop for 18 s).
  const open = (names: Set<string> | null) => {
    const top = frames[frames.length - 1];
    const prefix = top ? joinPath(top.prefix, top.names ? top.at : String(top.index)) : '';
    frames.push({ prefix, names, at: '', index: 0, expectName: names !== null });
  };
  for (let i = 0; i < json.length && out.length < max; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      let escaped = false;
      for (let d = json.charCodeAt(end); d !== 0x22; d = json.charCodeAt(end)) {
        if (d === 0x5c /* \ */) {
          escaped = true;
          end += 2;
        } else end++;
      }
      const top = frames[frames.length - 1];
      if (top?.names && top.expectName) {
        const name = escaped ? (JSON.parse(json.slice(i, end + 1)) as string) : json.slice(i + 1, end);
        if (!top.names.has(name)) top.names.add(name);
        else {
          const path = joinPath(top.prefix, name).replace(/\p{Cs}/gu, '\uFFFD');
          if (!reported.has(path)) out.push({ path, message: 'is given more than once' });
          reported.add(path);
        }
        top.at = name;
        top.expectName = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) open(new Set());
    else if (c === 0x5b /* [ */) open(null);
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) frames.pop();
    else if (c === 0x2c /* , */) {
      const top = frames[frames.length - 1];
      if (top?.names) top.expectName = true;
      else if (top) top.index++;
    }
  }
  return out;
}

#!/usr/bin/env python3
"""Import circles between Rust modules, at the top level or inside every folder.

Usage: tools/circles.py SRC_DIR [--depth top|all]

The module tree is read from `lib.rs` (or `main.rs`) by following `mod name;`
declarations, `#[path = "..."]` included. Items under `#[cfg(test)]` are left out:
only production code counts. A reference from module A to module B (through
`crate::`, `super::`, `self::` or a `use` tree, and through a `use` re-export in a
common parent) is an edge between the two children of their nearest common ancestor
that hold A and B; a module that uses its own parent or child makes no edge.

Prints one line per circle, e.g. `circle in pods: prepare <-> worker`
(`circle: a <-> b` at the top level); exits 1 if there is any.
"""
import os
import re
import sys

IDENT = r'[A-Za-z_][A-Za-z0-9_]*'


def strip_comments(text):
    """Drop `//` and `/* */` comments and the insides of string literals."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            i = n if j < 0 else j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            i = n if j < 0 else j + 2
        elif c == 'r' and re.match(r'r#*"', text[i:i + 8]) and (i == 0 or not re.match(r'\w', text[i - 1])):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            out.append('""')
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or text.startswith("'\\u{", i):
            j = text.find("'", i + 1 if text[i + 1] != '\\' else i + 3)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def item_end(text, i):
    """Index just after the item starting at i: its `;` or its matching `}`."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in '{([':
            depth += 1
        elif c in '})]':
            depth -= 1
            if depth == 0 and c == '}':
                return i + 1
        elif c == ';' and depth == 0:
            return i + 1
        i += 1
    return i


ATTR = re.compile(r'#\[[^\]]*\]\s*')


def strip_test_items(text):
    """Remove every item marked `#[cfg(test)]` (with its other attributes)."""
    while True:
        m = re.search(r'#\[cfg\(test\)\]\s*', text)
        if not m:
            return text
        j = m.end()
        while True:
            a = ATTR.match(text, j)
            if not a:
                break
            j = a.end()
        text = text[:m.start()] + text[item_end(text, j):]


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = re.sub(r'\s+', '', re.sub(r'\s+as\s+' + IDENT, '', tree))

    def parse(s, prefix):
        paths, depth, start = [], 0, 0
        parts = []
        for k, ch in enumerate(s):
            if ch == '{':
                depth += 1
            elif ch == '}':
                depth -= 1
            elif ch == ',' and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        for p in parts:
            if not p:
                continue
            if '{' in p:
                head, rest = p.split('{', 1)
                segs = [x for x in head.split('::') if x]
                paths += parse(rest[:rest.rfind('}')], prefix + segs)
            else:
                segs = [x for x in p.split('::') if x]
                paths.append(prefix + segs)
        return paths

    return parse(tree, [])


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path (tuple) -> stripped text
        root = next(os.path.join(src, f) for f in ('lib.rs', 'main.rs') if os.path.exists(os.path.join(src, f)))
        self.load((), root, True)
        self.uses = {m: self.use_map(m, t) for m, t in self.files.items()}

    def load(self, path, file, owns_dir):
        text = strip_test_items(strip_comments(open(file).read()))
        self.files[path] = text
        here = os.path.dirname(file)
        kids = here if owns_dir else os.path.join(here, os.path.basename(file)[:-3])
        decl = re.compile(r'((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(' + IDENT + r')\s*;')
        for m in decl.finditer(text):
            attrs, name = m.group(1), m.group(2)
            if re.search(r'#\[path\b', attrs):
                target = self.path_attr(file, name)
                self.load(path + (name,), target, target.endswith('mod.rs'))
                continue
            a, b = os.path.join(kids, name + '.rs'), os.path.join(kids, name, 'mod.rs')
            if os.path.exists(a):
                self.load(path + (name,), a, False)
            elif os.path.exists(b):
                self.load(path + (name,), b, True)

    def path_attr(self, file, name):
        """The file a `#[path]` names (strings are blanked in the stripped text)."""
        raw = open(file).read()
        m = re.search(r'#\[path\s*=\s*"([^"]*)"\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+' + name + r'\s*;', raw)
        return os.path.join(os.path.dirname(file), m.group(1))

    def absolute(self, mod, segs):
        """A path as written in module `mod` -> an absolute path, or None if external."""
        if not segs:
            return None
        if segs[0] == 'crate':
            return list(segs[1:])
        base = list(mod)
        if segs[0] in ('self', 'super'):
            while segs and segs[0] in ('self', 'super'):
                if segs[0] == 'super':
                    base = base[:-1]
                segs = segs[1:]
            return base + list(segs)
        if tuple(base + [segs[0]]) in self.files:  # a child module, 2018-style
            return base + list(segs)
        return None

    def use_map(self, mod, text):
        names = {}
        for m in re.finditer(r'\buse\s+([^;]*);', text):
            for segs in expand_use(m.group(1)):
                if not segs or segs[-1] in ('*', 'self'):
                    segs = segs[:-1]
                p = self.absolute(mod, segs)
                if p:
                    names[segs[-1] if segs else None] = p
        return names

    def resolve(self, path, seen=0):
        """The deepest module an absolute path reaches, following `use` re-exports."""
        mod = ()
        for k, s in enumerate(path):
            if mod + (s,) in self.files:
                mod = mod + (s,)
                continue
            target = self.uses.get(mod, {}).get(s)
            if target and seen < 8:
                return self.resolve(target + list(path[k + 1:]), seen + 1)
            break
        return mod

    def edges(self):
        ref = re.compile(r'(?<![\w:])((?:crate|super|self)(?:\s*::\s*(?:' + IDENT + r'|\{[^;]*?\}))+)')
        out = set()
        for mod, text in self.files.items():
            found = []
            for m in re.finditer(r'\buse\s+([^;]*);', text):
                found += expand_use(m.group(1))
            body = re.sub(r'\buse\s+[^;]*;', ';', text)
            found += [[s for s in re.split(r'\s*::\s*', m.group(1)) if s] for m in ref.finditer(body)]
            for segs in found:
                segs = [s for s in segs if s not in ('*',) and not s.startswith('{')]
                p = self.absolute(mod, segs)
                if p is None:
                    continue
                target = self.resolve(p)
                k = 0
                while k < len(mod) and k < len(target) and mod[k] == target[k]:
                    k += 1
                if k < len(mod) and k < len(target):  # neither holds the other
                    out.add((mod[:k], mod[k], target[k]))
        return out


def circles(edges):
    by_parent = {}
    for parent, a, b in edges:
        by_parent.setdefault(parent, {}).setdefault(a, set()).add(b)
    found = []
    for parent, graph in sorted(by_parent.items()):
        nodes = sorted(set(graph) | {b for bs in graph.values() for b in bs})
        index, low, stack, on, counter = {}, {}, [], set(), [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in sorted(graph.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                c = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    c.append(w)
                    if w == v:
                        break
                if len(c) > 1:
                    found.append((parent, sorted(c), graph))

        for v in nodes:
            if v not in index:
                visit(v)
    return found


def main():
    args = sys.argv[1:]
    depth = 'top'
    if '--depth' in args:
        k = args.index('--depth')
        depth = args[k + 1]
        del args[k:k + 2]
    verbose = '-v' in args
    args = [a for a in args if a != '-v']
    crate = Crate(args[0])
    edges = crate.edges()
    if depth == 'top':
        edges = {e for e in edges if e[0] == ()}
    bad = circles(edges)
    for parent, members, graph in bad:
        where = 'circle' if not parent else 'circle in ' + '::'.join(parent)
        print(where + ': ' + ' <-> '.join(members))
        if verbose:
            for a in members:
                for b in sorted(graph.get(a, ())):
                    if b in members:
                        print(f'    {a} -> {b}')
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    sys.setrecursionlimit(10000)
    main()

#!/usr/bin/env python3
"""Generates crates/bpf-progs/src/bpf/xdp_lb_aes_ct_sbox.h: the AES S-box
and its inverse as straight-line Boolean circuits on bit planes (bitsliced:
every variable holds one bit of many bytes), for xdp_lb's constant-time AES
engine. No table, no branch, no secret-dependent memory access.

Derivation (nothing copied): the S-box is A * inv(x) + 0x63 in GF(2^8) mod
x^8+x^4+x^3+x+1. inv is computed in the isomorphic tower field
GF(2^4)[Y]/(Y^2+Y+nu), GF(2^4) = GF(2)[z]/(z^4+z+1):
  a = ah*Y + al,  D = nu*ah^2 + al*(ah+al),  a^-1 = (ah*Y + (ah+al)) * D^-1
(0 maps to 0). The basis changes in and out are 8x8 binary matrices (merged
with the affine map), emitted as XOR networks with greedy common-pair
elimination. Values that wait across a long stretch of the circuit (the
inputs, ah and ah+al, the two halves of the result) go through 16 words of
scratch memory `m` (a map value): the BPF stack of xdp_lb's call chain has
no room for the spills they would cause. The script checks every circuit on all 256 inputs before it
writes the header. Run: python3 scripts/gen_aes_ct_sbox.py > <header>
"""
import itertools, sys

def gf8_mul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return r

def gf8_inv(a):
    return 0 if a == 0 else next(b for b in range(256) if gf8_mul(a, b) == 1)

def affine(x):
    r = 0
    for i in range(8):
        bit = (x >> i) ^ (x >> ((i + 4) % 8)) ^ (x >> ((i + 5) % 8)) ^ (x >> ((i + 6) % 8)) ^ (x >> ((i + 7) % 8))
        r |= (bit & 1) << i
    return r ^ 0x63

SBOX = [affine(gf8_inv(x)) for x in range(256)]
INV_SBOX = [0] * 256
for i, s in enumerate(SBOX):
    INV_SBOX[s] = i

def gf4_mul(a, b):
    r = 0
    for i in range(4):
        if (b >> i) & 1:
            r ^= a << i
    for i in (6, 5, 4):
        if (r >> i) & 1:
            r ^= 0x13 << (i - 4)
    return r

def gf4_inv(a):
    return 0 if a == 0 else next(b for b in range(16) if gf4_mul(a, b) == 1)

NU = next(n for n in range(1, 16) if all(gf4_mul(y, y) ^ y != n for y in range(16)))

def t_mul(a, b):
    ah, al, bh, bl = a >> 4, a & 15, b >> 4, b & 15
    hh = gf4_mul(ah, bh)
    return ((hh ^ gf4_mul(ah, bl) ^ gf4_mul(al, bh)) << 4) | (gf4_mul(hh, NU) ^ gf4_mul(al, bl))

def t_pow(a, n):
    r = 1
    for _ in range(n):
        r = t_mul(r, a)
    return r

def t_inv(a):
    ah, al = a >> 4, a & 15
    s = ah ^ al
    d = gf4_mul(NU, gf4_mul(ah, ah)) ^ gf4_mul(al, s)
    di = gf4_inv(d)
    return (gf4_mul(ah, di) << 4) | gf4_mul(s, di)

# A root of the AES polynomial in the tower field: x -> beta.
BETA = next(b for b in range(2, 256)
            if t_pow(b, 8) ^ t_pow(b, 4) ^ t_pow(b, 3) ^ b ^ 1 == 0)

def to_tower(x):
    r = 0
    for i in range(8):
        if (x >> i) & 1:
            r ^= t_pow(BETA, i)
    return r

FROM_TOWER = [0] * 256
for x in range(256):
    FROM_TOWER[to_tower(x)] = x
assert all(t_inv(to_tower(x)) == to_tower(gf8_inv(x)) for x in range(256))

def matrix_of(f):
    """Rows: output bit i = XOR of input bits in row i (f linear)."""
    cols = [f(1 << j) for j in range(8)]
    return [[j for j in range(8) if (cols[j] >> i) & 1] for i in range(8)]

class Circuit:
    def __init__(self, prefix):
        self.lines, self.n, self.prefix = [], 0, prefix

    def new(self, expr):
        v = f"{self.prefix}{self.n}"
        self.n += 1
        self.lines.append(f"__u64 {v} = {expr};")
        return v

    def xor_net(self, rows):
        """rows: list of lists of signal names; returns one signal per row
        (None for an empty row). Greedy: the most frequent pair first."""
        rows = [list(r) for r in rows]
        while True:
            count = {}
            for r in rows:
                for p in itertools.combinations(sorted(r), 2):
                    count[p] = count.get(p, 0) + 1
            if not count:
                break
            p, c = max(count.items(), key=lambda kv: (kv[1], kv[0]))
            if c < 2:
                break
            v = self.new(f"{p[0]} ^ {p[1]}")
            for r in rows:
                if p[0] in r and p[1] in r:
                    r.remove(p[0]); r.remove(p[1]); r.append(v)
        out = []
        for r in rows:
            if not r:
                out.append(None)
                continue
            acc = r[0]
            for s in r[1:]:
                acc = self.new(f"{acc} ^ {s}")
            out.append(acc)
        return out

    def gf4_mul(self, a, b):
        p = {(i, j): self.new(f"{a[i]} & {b[j]}") for i in range(4) for j in range(4)}
        c = [[p[(i, k - i)] for i in range(4) if 0 <= k - i < 4] for k in range(7)]
        # z^4 = z + 1, z^5 = z^2 + z, z^6 = z^3 + z^2
        rows = [c[0] + c[4], c[1] + c[4] + c[5], c[2] + c[5] + c[6], c[3] + c[6]]
        return self.xor_net(rows)

    def linear4(self, f, a):
        rows = [[a[j] for j in range(4) if (f(1 << j) >> i) & 1] for i in range(4)]
        return self.xor_net(rows)

    def gf4_inv(self, a):
        # Algebraic normal form of each output bit, monomials shared.
        anf = []
        for bit in range(4):
            t = [(gf4_inv(x) >> bit) & 1 for x in range(16)]
            for i in range(4):
                for x in range(16):
                    if x & (1 << i):
                        t[x] ^= t[x ^ (1 << i)]
            anf.append([m for m in range(16) if t[m]])
        mono = {}
        def monomial(m):
            if m in mono:
                return mono[m]
            bits = [i for i in range(4) if m & (1 << i)]
            if len(bits) == 1:
                v = a[bits[0]]
            else:
                v = self.new(f"{monomial(m & ~(1 << bits[-1]))} & {a[bits[-1]]}")
            mono[m] = v
            return v
        rows = []
        for ms in anf:
            assert 0 not in ms  # inv(0) = 0: no constant term
            rows.append([monomial(m) for m in ms])
        return self.xor_net(rows)

def sbox_circuit(prefix, m_in, c_in, m_out, c_out):
    """inputs x0..x7 (planes), outputs: list of 8 signal names."""
    c = Circuit(prefix)
    # The inputs wait in memory too (m[8..15]) while the input basis change
    # runs.
    for i in range(8):
        c.lines.append(f"m[{i + 8}] = x{i};")
    x = [f"m[{i + 8}]" for i in range(8)]
    y = c.xor_net([[x[j] for j in m_in[i]] for i in range(8)])
    y = [c.new(f"{y[i]} ^ FP_AES_BS_ONES") if (c_in >> i) & 1 else y[i] for i in range(8)]
    al, ah = y[:4], y[4:]
    s = [c.new(f"{ah[i]} ^ {al[i]}") for i in range(4)]
    sq = c.linear4(lambda v: gf4_mul(NU, gf4_mul(v, v)), ah)
    p = c.gf4_mul(al, s)
    d = [c.new(f"{sq[i]} ^ {p[i]}") if sq[i] else p[i] for i in range(4)]
    # ah and s wait in memory (m[0..7], in the caller's map value) while
    # D^-1 is computed: 8 fewer live values, no stack spills.
    for i in range(4):
        c.lines.append(f"m[{i}] = {ah[i]};")
        c.lines.append(f"m[{i + 4}] = {s[i]};")
    di = c.gf4_inv(d)
    oh = c.gf4_mul([f"m[{i}]" for i in range(4)], di)
    for i in range(4):
        c.lines.append(f"m[{i}] = {oh[i]};")
    ol = c.gf4_mul([f"m[{i + 4}]" for i in range(4)], di)
    for i in range(4):
        c.lines.append(f"m[{i + 4}] = {ol[i]};")
    # And the output basis change reads them back.
    z = [f"m[{i + 4}]" for i in range(4)] + [f"m[{i}]" for i in range(4)]
    o = c.xor_net([[z[j] for j in m_out[i]] for i in range(8)])
    o = [c.new(f"{o[i]} ^ FP_AES_BS_ONES") if (c_out >> i) & 1 else o[i] for i in range(8)]
    return c, o

def simulate(c, outs, x):
    env = {f"x{i}": (x >> i) & 1 for i in range(8)}
    env["FP_AES_BS_ONES"] = 1
    for line in c.lines:
        if line.startswith("m["):
            dst, src = line[:-1].split(" = ")
            env[dst] = env[src]
            continue
        name, expr = line[len("__u64 "):-1].split(" = ")
        a, op, b = expr.split(" ")
        env[name] = env[a] ^ env[b] if op == "^" else env[a] & env[b]
    return sum(env[o] << i for i, o in enumerate(outs))

# Forward: to_tower, inverse, from_tower then affine (linear part + 0x63).
lin_affine = lambda v: affine(v) ^ 0x63
fwd, fwd_out = sbox_circuit("s", matrix_of(to_tower), 0,
                            matrix_of(lambda v: lin_affine(FROM_TOWER[v])), 0x63)
# Inverse: y = to_tower(Ainv(x ^ 0x63)) = to_tower(Ainv(x)) ^ to_tower(Ainv(0x63)).
ainv = [0] * 256
for v in range(256):
    ainv[lin_affine(v)] = v
inv, inv_out = sbox_circuit("i", matrix_of(lambda v: to_tower(ainv[v])), to_tower(ainv[0x63]),
                            matrix_of(lambda v: FROM_TOWER[v]), 0)
for x in range(256):
    assert simulate(fwd, fwd_out, x) == SBOX[x], x
    assert simulate(inv, inv_out, x) == INV_SBOX[x], x

def emit(name, c, outs, doc):
    gates = sum(1 for line in c.lines if not line.startswith("m["))
    print(f"/* {doc} ({gates} gates). In: x0..x7 (bit planes, x0 the least")
    print(" * significant bit of each byte); out: y0..y7; m: 16 words of scratch")
    print(" * (volatile __u64 *, in a map value: not the stack). */")
    print(f"#define {name}(m, x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5, y6, y7) \\")
    print("\tdo { \\")
    for line in c.lines:
        print(f"\t\t{line} \\")
    for i, o in enumerate(outs):
        print(f"\t\ty{i} = {o}; \\")
    print("\t} while (0)")
    print()

print("/* SPDX-License-Identifier: (MIT OR Apache-2.0) */")
print("/* Generated by scripts/gen_aes_ct_sbox.py: do not edit. The AES S-box and")
print(f" * its inverse as Boolean circuits on bit planes (tower field, nu = {NU:#x},")
print(f" * beta = {BETA:#04x}); checked on all 256 inputs by the generator. */")
print("#ifndef FLOWPIN_XDP_LB_AES_CT_SBOX_H")
print("#define FLOWPIN_XDP_LB_AES_CT_SBOX_H")
print()
emit("FP_AES_BS_SBOX", fwd, fwd_out, "SubBytes")
emit("FP_AES_BS_INV_SBOX", inv, inv_out, "InvSubBytes")
print("#endif /* FLOWPIN_XDP_LB_AES_CT_SBOX_H */")
print(f"gates: forward {len(fwd.lines)}, inverse {len(inv.lines)}", file=sys.stderr)

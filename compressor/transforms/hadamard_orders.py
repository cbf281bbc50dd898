"""Which Hadamard orders `hadamard.py` builds, torch-free so recipe validation can ask before loading a model.

An order n is built as H_m ⊗ H_{2^k} with n = m·2^k and m a base order: 1, 2 (Sylvester),
Paley I (m = q + 1, prime q ≡ 3 mod 4) or Paley II (m = 2(q + 1), prime q ≡ 1 mod 4).
That covers every hidden, intermediate and head width of Llama 3, Mistral, Qwen 2/2.5/3,
Gemma 2/3 and Phi-3 (e.g. 2304 = 36·2^6, 3584 = 28·2^7, 18944 = 148·2^7); an order it does
not cover (e.g. 13696 = 107·2^7) is refused with this module's reason, not guessed.
"""

from __future__ import annotations

import math


def is_prime(q: int) -> bool:
    if q < 2:
        return False
    if q % 2 == 0:
        return q == 2
    return all(q % d for d in range(3, math.isqrt(q) + 1, 2))


def base_kind(m: int) -> str | None:
    """Which base construction yields order m (None if none of ours does)."""
    if m in (1, 2):
        return "sylvester"
    if m % 4:
        return None  # Hadamard orders > 2 are multiples of 4
    if is_prime(m - 1) and (m - 1) % 4 == 3:
        return "paley1"
    if is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return "paley2"
    return None


def decompose(n: int) -> tuple[int, int] | None:
    """(m, k) with n = m·2^k, a base order m and the largest possible k; None if unsupported."""
    if n < 1:
        return None
    k = (n & -n).bit_length() - 1  # 2-adic valuation of n
    for kk in range(k, -1, -1):
        m = n >> kk
        if base_kind(m) is not None:
            return m, kk
    return None


def is_hadamard_size(n: int) -> bool:
    """Whether `hadamard_matrix(n)` can build an order-n matrix."""
    return decompose(int(n)) is not None


def unsupported_reason(n: int) -> str:
    """Why order n is not built: the factorisation and what the builder supports."""
    odd = n >> ((n & -n).bit_length() - 1) if n > 0 else n
    bases = [m for m in range(1, 201) if base_kind(m) is not None]
    if n < 1:
        why = "it is not a positive integer"
    elif n > 2 and n % 4:
        why = f"{n} is not a multiple of 4, and no Hadamard matrix of such an order exists"
    else:
        why = (f"{n} = {odd}·2^{(n & -n).bit_length() - 1} and no m·2^j split of it has a base order m we build"
               " (prime-power Paley fields are not implemented)")
    return (f"Hadamard matrix of order {n} is unsupported: {why}; supported orders are m·2^k with m = 1, 2, "
            "a Paley I order (q+1, prime q ≡ 3 mod 4) or a Paley II order (2(q+1), prime q ≡ 1 mod 4); "
            f"m up to 200: {bases}")

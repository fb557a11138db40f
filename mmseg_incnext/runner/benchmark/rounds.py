"""The order of the models in each timed round."""
from typing import List


def round_orders(n: int, rounds: int) -> List[List[int]]:
    """The order of the ``n`` models in each timed round: a Williams design, cycled.

    A step is slowed by what ran just before it (the heap or caches the previous model
    left), so over ``n`` rounds (``2n`` for odd ``n``) every model takes every position and
    follows every other model equally often. Rotating one order would keep each model's
    predecessor.
    """
    first, low, high = [0], 1, n - 1
    for i in range(1, n):
        if i % 2:
            first.append(low)
            low += 1
        else:
            first.append(high)
            high -= 1
    rows = [[(v + shift) % n for v in first] for shift in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [rows[i % len(rows)] for i in range(rounds)] if n else []

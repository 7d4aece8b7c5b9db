#!/usr/bin/env python3
"""Scores decision rules on a finished run's logits, offline.

Input: the JSON lines written by
    cargo run --release -p trainer --example dump_logits -- RUN LOGITS.jsonl
and, optionally, a second file from the same command with --mirror (the logits of the
images flipped left to right).

    python3 scripts/decision_rules.py LOGITS.jsonl [MIRRORED.jsonl]

Rules, each scored with the competition's harmonic mean of micro and macro F1 per
attribute, averaged per category and then over categories:
- plain: the largest logit (what the trainer does);
- post-hoc logit adjustment: the largest of logits - tau * ln(prior), the priors being
  each class's share among the training rows; tau chosen per attribute from 0 to 2 in
  tenths (a) on the validation rows themselves (optimistic), (b) cross-fitted on the
  validation rows (chosen on K-1 of K folds, scored on the last, the folds' counts
  pooled), (c) on the training rows, or fixed;
- with a mirrored file: the mirrored logits alone and the mean of both (test-time
  flipping).
Standard library only.
"""

import collections
import json
import math
import sys

TAUS = [i / 10 for i in range(21)]


def decide(row, log_prior, tau):
    """The first class of the largest adjusted logit, as the trainer's argmax picks."""
    best, best_value = 0, -math.inf
    for c, (z, p) in enumerate(zip(row, log_prior)):
        value = z - tau * p
        if value > best_value:
            best, best_value = c, value
    return best


class Tally:
    def __init__(self, classes):
        self.tp = [0] * classes
        self.true = [0] * classes
        self.pred = [0] * classes
        self.n = 0

    def add(self, label, predicted):
        self.n += 1
        self.true[label] += 1
        self.pred[predicted] += 1
        self.tp[label] += predicted == label

    def harmonic(self):
        if self.n == 0:
            return 0.0
        micro = sum(self.tp) / self.n
        f1 = [2 * t / (a + b) for t, a, b in zip(self.tp, self.true, self.pred) if a + b]
        macro = sum(f1) / len(f1)
        return 0.0 if micro + macro == 0 else 2 * micro * macro / (micro + macro)


def rows_of(entry):
    c = entry["classes"]
    z = entry["logits"]
    return [z[i * c:(i + 1) * c] for i in range(len(entry["labels"]))]


def tally(entry, tau, rows=None, tally_into=None):
    logits = rows_of(entry)
    t = tally_into or Tally(entry["classes"])
    for i in range(len(logits)) if rows is None else rows:
        label = entry["labels"][i]
        if label is not None:
            t.add(label, decide(logits[i], entry["log_prior"], tau))
    return t


def best_tau(entry, rows=None):
    # The smallest of the best.
    return max(TAUS, key=lambda tau: (tally(entry, tau, rows).harmonic(), -tau))


def cross_fitted(entry, folds):
    n = len(entry["labels"])
    pooled = Tally(entry["classes"])
    for k in range(folds):
        fit = [i for i in range(n) if i % folds != k]
        held = [i for i in range(n) if i % folds == k]
        tally(entry, best_tau(entry, fit), held, pooled)
    return pooled.harmonic()


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            out[(e["category"], e["attribute"], e["split"])] = e
    return out


def mean_logits(a, b):
    both = dict(a)
    both["logits"] = [(x + y) / 2 for x, y in zip(a["logits"], b["logits"])]
    return both


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    plain = load(sys.argv[1])
    mirrored = load(sys.argv[2]) if len(sys.argv) == 3 else None
    scores = collections.defaultdict(lambda: collections.defaultdict(list))

    def put(rule, category, value):
        scores[rule][category].append(value)

    for (category, attribute, split), entry in plain.items():
        if split != "val":
            continue
        test = plain[(category, attribute, "test")]
        train = plain[(category, attribute, "train")]
        put("val: plain", category, tally(entry, 0).harmonic())
        put("test: plain", category, tally(test, 0).harmonic())
        tau = best_tau(entry)
        put("val: tau on val (in-sample)", category, tally(entry, tau).harmonic())
        put("test: tau on val", category, tally(test, tau).harmonic())
        for folds in (2, 5):
            put(f"val: tau cross-fitted, {folds} folds", category, cross_fitted(entry, folds))
        tau = best_tau(train)
        put("val: tau on train", category, tally(entry, tau).harmonic())
        put("test: tau on train", category, tally(test, tau).harmonic())
        for tau in (0.3, 0.5, 1.0):
            put(f"val: tau fixed {tau}", category, tally(entry, tau).harmonic())
            put(f"test: tau fixed {tau}", category, tally(test, tau).harmonic())
        if mirrored is not None:
            for name, e in (("val", entry), ("test", test)):
                m = mirrored[(category, attribute, name)]
                put(f"{name}: mirrored", category, tally(m, 0).harmonic())
                put(f"{name}: mean with mirrored", category, tally(mean_logits(e, m), 0).harmonic())

    categories = sorted({c for rule in scores.values() for c in rule})
    print("| rule | " + " | ".join(categories) + " | overall |")
    print("| --- " * (len(categories) + 2) + "|")
    for rule in sorted(scores, key=lambda r: (not r.startswith("val"), r)):
        per = [sum(scores[rule][c]) / len(scores[rule][c]) for c in categories]
        cells = " | ".join(f"{v:.4f}" for v in per)
        print(f"| {rule} | {cells} | {sum(per) / len(per):.4f} |")


if __name__ == "__main__":
    main()

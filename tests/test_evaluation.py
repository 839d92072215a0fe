"""Weighted kNN, the linear probe and feature extraction (also across processes)."""
from __future__ import annotations

import math

import torch

from sslzoo.evaluation import evaluate_features, extract_features, knn_predict
from tests.dist_helpers import run_distributed


def knn_reference(train, labels, query, classes, k, t):
    """InstDisc Sec. 3.4: the k most cosine-similar training features vote exp(s/t)."""
    out = []
    for q in query:
        sims = [(float(torch.nn.functional.cosine_similarity(q, x, dim=0)), int(y))
                for x, y in zip(train, labels)]
        votes = [0.0] * classes
        for s, y in sorted(sims, reverse=True)[:k]:
            votes[y] += math.exp(s / t)
        out.append(max(range(classes), key=votes.__getitem__))
    return out


def test_weighted_knn_matches_the_reference_vote():
    g = torch.Generator().manual_seed(0)
    train, labels = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    query = torch.randn(12, 6, generator=g)
    pred = knn_predict(train, labels, query, 3, k=7, temperature=0.1)
    assert pred.tolist() == knn_reference(train, labels, query, 3, 7, 0.1)


def test_separable_features_are_classified_perfectly_by_both_protocols():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(4) * 5
    labels = torch.arange(4).repeat(25)
    feats = centres[labels] + 0.1 * torch.randn(100, 4, generator=g)
    result = evaluate_features(feats[:80], labels[:80], feats[80:], labels[80:], k=10)
    assert result["knn_top1"] == 1.0 and result["linear_top1"] == 1.0


class Flatten(torch.nn.Module):
    """A stand-in method whose embedding is the mean colour of each image."""

    def embed(self, x):
        return x.mean(dim=(2, 3))


def _features_on_ranks(rank, world_size, images):
    return extract_features(Flatten(), images, torch.device("cpu"), batch_size=2)


def test_features_extracted_on_two_processes_equal_one_process():
    images = (torch.rand(7, 3, 4, 4) * 255).to(torch.uint8)   # 7: shards of unequal size
    single = extract_features(Flatten(), images, torch.device("cpu"))
    r0, r1 = run_distributed(_features_on_ranks, images)
    torch.testing.assert_close(r0, single)
    torch.testing.assert_close(r1, single)

"""Metrics: pure functions over codes, factors, class probabilities and images.

retrieval        NN retrieval mAP per chunk / code slice (Hu et al. Table 2)
probes           linear classifier accuracy, linear regression MAE (Hu Table 3, Ruiz Table 1)
disentanglement  MIG, SAP, DCI, FactorVAE, BetaVAE (disentanglement_lib's definitions)
gbt              the gradient-boosted trees DCI fits (all factors at once)
generation       swap success, attribute flips, Inception-style score, MS-SSIM diversity
classifier       the per-dataset factor classifier the generation scores use (cached)
inception        Inception-v3 from a user-provided weights file
summary          headline numbers and text tables; paper_numbers.json: the papers' numbers
"""

"""fdrl_studies: the paper's experiments, built on the ``fdrl`` library and kept apart from it.

Paper reproductions (the density chasm of Section 3.1, the composition must-shows of
Sections 6.4-6.5), the image figures of Section 6.2 and App. G, the pairings figure (Fig. 10),
and the digit classifiers they train (plain and adversarially, with the PGD-L2 attack) or load
(the robust CIFAR10 ResNet-50). This package imports ``fdrl``; ``fdrl`` never imports it,
except its command line, which reaches a study only inside the command that runs it.
"""

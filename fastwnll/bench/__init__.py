"""Microbenchmarks of fastwnll's own code paths, shipped with the package so that a user can time them
on their own machine and compare with the published figures (``fastwnll bench``, see
``fastwnll bench --help``): WNLL interpolation (:mod:`.wnll`), kNN graphs (:mod:`.knn`), TV
iterations (:mod:`.tv`) and a PGD training epoch (:mod:`.training`), on synthetic data
(:mod:`.data`); timing (:mod:`.timing`), result rows and files (:mod:`.results`), the published
targets (:mod:`.targets`) and the summary of a folder of results (:mod:`.summary`).

Only fastwnll's paths are timed here; the comparisons with other libraries (the published algorithm,
graphlearning, scikit-image, faiss) are the scripts of the repository's ``benchmarks/`` folder.
"""

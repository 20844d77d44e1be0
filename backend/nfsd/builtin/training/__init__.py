"""How the built-in prior was made and is measured: the dataset of patterns on meshes, its
autoencoder, training, the classifier that scores views, sampling and the quality benchmarks.
Nothing at run time imports this package (``nfsd.builtin.prior_model`` loads the shipped weights)."""

"""The course's answers: ``reference.numpy`` (every exercise) and ``reference.torch``
(an autograd Function and nn.Modules written from scratch). Import the one you need;
importing this package imports neither, so NumPy-only notebooks never load torch."""

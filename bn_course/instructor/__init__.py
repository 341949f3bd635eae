"""The instructor's side of the course: build the release, check it, grade submissions.

One module per role, imported in this order (each imports only those above it):

- ``layout``: where the course's files live (``Course``, ``find_course``, ``CourseError``);
- ``runner``: nbgrader's configuration and converters, run quietly;
- ``colab``: the generated Colab setup cell and Colab/Binder badges;
- ``release``: build notebooks/ from solutions/, check it is in sync, run notebooks;
- ``workspace``: the student's working folder and JupyterLab settings for ``bn-course lab``;
- ``preprocessors``: nbgrader preprocessors named in nbgrader_config.py;
- ``sandbox``: run one submission's notebooks in an isolated kernel (on a worker);
- ``ledger``, ``report``, ``cluster``: what grading recorded, what the class got wrong,
  where the work runs;
- ``grading``: ``bn-course grade``, one nbgrader course directory for any number of workers.

Importing this package is cheap: nbgrader, nbformat, nbclient and dask load inside the
functions that use them.
"""

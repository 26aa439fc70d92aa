"""Instructor machinery of the gradcam-course: grading that student code cannot reach.

Installed with the ``instructor`` extra; learners' ``course_utils`` ships none of it. The
grade is computed here, in the grader process; each submission runs in a bubblewrap sandbox
(:mod:`grading.sandbox`) whose worker (:mod:`grading.worker`) only answers requests with
plain data (:mod:`grading.protocol`). Command line: ``python -m grading --help``.

This file imports nothing: it is also bound, with the other sandbox-side modules
(:data:`grading.sandbox.SANDBOX_MODULES`), into every sandbox.
"""

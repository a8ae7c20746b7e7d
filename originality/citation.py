"""The paper this package implements, cited once; the app, the printable report, the README
and the command line's --help all take it from here.

`tests/test_citation.py` checks that the README quotes `TEXT` and links `URL`.
"""

from __future__ import annotations

AUTHORS = ("Adi Haviv", "Shahar Sarfaty", "Uri Hacohen", "Niva Elkin-Koren", "Roi Livni", "Amit H. Bermano")
TITLE = "Not Every Image is Worth a Thousand Words: Quantifying Originality in Stable Diffusion"
YEAR = 2024
ARXIV_ID = "2408.08184"
URL = f"https://arxiv.org/abs/{ARXIV_ID}"
SHORT = f"Haviv et al. {YEAR}"  # in running text: "progressive textual inversion (Haviv et al. 2024)"
# The full reference, as a sentence.
TEXT = (f"Haviv, Sarfaty, Hacohen, Elkin-Koren, Livni, Bermano ({YEAR}). {TITLE}. arXiv:{ARXIV_ID}.")
BIBTEX = f"""@article{{haviv{YEAR}originality,
  title   = {{{TITLE}}},
  author  = {{{' and '.join(AUTHORS)}}},
  journal = {{arXiv preprint arXiv:{ARXIV_ID}}},
  year    = {{{YEAR}}}
}}"""


def markdown() -> str:
    """The reference in Markdown, the title linked to the paper."""
    return (f"Haviv, Sarfaty, Hacohen, Elkin-Koren, Livni, Bermano ({YEAR}). [*{TITLE}*]({URL}). "
            f"arXiv:{ARXIV_ID}.")

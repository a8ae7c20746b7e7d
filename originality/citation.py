"""The paper this package implements, cited once; the app, the printable report, the README
and the command line's --help all take it from here.

`tests/test_citation.py` checks that the README quotes `TEXT` and links `URL`; `tests/test_similarity.py` that it
quotes `DCR.text` and `CSD.text`.
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


# --------------------------------------------------------------------------- the measures beside the score
# Copy and style similarity to images the user names (`originality.similarity`) follow these two papers;
# the README, the app and the printable report cite them from here.


class Paper:
    """A paper a measure of this package follows: `text` (the reference as a sentence) and `url`."""

    def __init__(self, short: str, authors: tuple[str, ...], year: int, title: str, venue: str, arxiv_id: str):
        self.short, self.authors, self.year, self.title, self.venue = short, authors, year, title, venue
        self.arxiv_id = arxiv_id
        self.url = f"https://arxiv.org/abs/{arxiv_id}"
        names = ", ".join(a.split()[-1] for a in authors)
        self.text = f"{names} ({year}). {title}. {venue}. arXiv:{arxiv_id}."

    def markdown(self) -> str:
        names = ", ".join(a.split()[-1] for a in self.authors)
        return f"{names} ({self.year}). [*{self.title}*]({self.url}). {self.venue}."


DCR = Paper("Somepalli et al. 2023 (DCR)",
            ("Gowthami Somepalli", "Vasu Singla", "Micah Goldblum", "Jonas Geiping", "Tom Goldstein"), 2023,
            "Diffusion Art or Digital Forgery? Investigating Data Replication in Diffusion Models", "CVPR 2023",
            "2212.03860")
CSD = Paper("Somepalli et al. 2024 (CSD)",
            ("Gowthami Somepalli", "Anubhav Gupta", "Kamal Gupta", "Shramay Palta", "Micah Goldblum",
             "Jonas Geiping", "Abhinav Shrivastava", "Tom Goldstein"), 2024,
            "Measuring Style Similarity in Diffusion Models", "arXiv preprint", "2404.01292")

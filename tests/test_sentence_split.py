"""The biomedical sentence splitter on hand-written cases: periods that must not end a sentence."""

import pytest

from biomegatron_nemo.data.sentence_split import BiomedicalSentenceSplitter, split_sentences

# (text, expected sentences): each case has a trap period that a naive ". " split would cut at.
CASES = [
    ("Patients received 2.5 mg of the drug daily. Outcomes improved.",
     ["Patients received 2.5 mg of the drug daily.", "Outcomes improved."]),
    ("As shown in Fig. 2, expression rose. This was unexpected.",
     ["As shown in Fig. 2, expression rose.", "This was unexpected."]),
    ("As shown in Figs. 2 and 3, expression rose. This was unexpected.",
     ["As shown in Figs. 2 and 3, expression rose.", "This was unexpected."]),
    ("Expression increased (Fig. 3A). In contrast, knockdown reduced it.",
     ["Expression increased (Fig. 3A).", "In contrast, knockdown reduced it."]),
    ("Smith et al. reported similar findings. We confirm them.",
     ["Smith et al. reported similar findings.", "We confirm them."]),
    ("Several cytokines (e.g. IL-6, TNF-alpha) were elevated. Others were not.",
     ["Several cytokines (e.g. IL-6, TNF-alpha) were elevated.", "Others were not."]),
    ("Several cytokines, e.g., IL-6, were elevated. Others were not.",
     ["Several cytokines, e.g., IL-6, were elevated.", "Others were not."]),
    ("The control arm (i.e. placebo) improved. The treated arm did better.",
     ["The control arm (i.e. placebo) improved.", "The treated arm did better."]),
    ("Wild-type vs. mutant mice were compared. No difference was found.",
     ["Wild-type vs. mutant mice were compared.", "No difference was found."]),
    ("J. D. Watson and F. H. C. Crick proposed the structure. It was a double helix.",
     ["J. D. Watson and F. H. C. Crick proposed the structure.", "It was a double helix."]),
    ("Escherichia coli (E. coli) strains were used. Growth was measured.",
     ["Escherichia coli (E. coli) strains were used.", "Growth was measured."]),
    ("The p value was < 0.05. The effect was significant.",
     ["The p value was < 0.05.", "The effect was significant."]),
    ("Mean age was 54.3 yr. Most were men.", ["Mean age was 54.3 yr.", "Most were men."]),
    # Biomedical abbreviations this module adds to pySBD's English list.
    ("The dose was 10 mg/kg b.i.d. for 2 weeks. Toxicity was low.",
     ["The dose was 10 mg/kg b.i.d. for 2 weeks.", "Toxicity was low."]),
    ("Drugs were given i.v. at 5 mg/kg. Toxicity was low.",
     ["Drugs were given i.v. at 5 mg/kg.", "Toxicity was low."]),
    ("Pseudomonas spp. were isolated from 12 samples. Streptococcus sp. was rare.",
     ["Pseudomonas spp. were isolated from 12 samples.", "Streptococcus sp. was rare."]),
    ("Data were analysed as before (cf. Table 1). Results follow.",
     ["Data were analysed as before (cf. Table 1).", "Results follow."]),
    ("Cells died within ca. 2 h. The rest survived.",
     ["Cells died within ca. 2 h.", "The rest survived."]),
    ("A model was fitted as in Eq. 3. It converged.",
     ["A model was fitted as in Eq. 3.", "It converged."]),
    # pySBD's list-item rule (switched off here) cut these at "i." / "h." and at "ii)".
    ("Phages were given i.v. every 12 h. Treatment was well tolerated.",
     ["Phages were given i.v. every 12 h.", "Treatment was well tolerated."]),
    ("Outcomes were i) survival, ii) relapse and iii) toxicity. Follow-up was 5 years.",
     ["Outcomes were i) survival, ii) relapse and iii) toxicity.", "Follow-up was 5 years."]),
    # Units written with a period in older abstracts.
    ("Each dog received 0.6 mg. per kilogram daily. None died.",
     ["Each dog received 0.6 mg. per kilogram daily.", "None died."]),
    ("The LD50 was 22 mg./kg. in mice. It was lower in rats.",
     ["The LD50 was 22 mg./kg. in mice.", "It was lower in rats."]),
    ("Doses were 5 mg/kg. per day. Infusions ran at 2 ml/min. Pressure rose.",
     ["Doses were 5 mg/kg. per day.", "Infusions ran at 2 ml/min.", "Pressure rose."]),
    ("Is this effective? We tested it! Results were clear.",
     ["Is this effective?", "We tested it!", "Results were clear."]),
    # Structured abstracts and wrapped lines.
    ("BACKGROUND: Diabetes is common. METHODS: We enrolled\n200 patients.",
     ["BACKGROUND: Diabetes is common.", "METHODS: We enrolled 200 patients."]),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:30] for c in CASES])
def test_biomedical_cases(text, expected):
    assert split_sentences(text) == expected


def test_empty_and_whitespace_give_no_sentences():
    assert split_sentences("") == []
    assert split_sentences("  \n\t ") == []


def test_abbreviation_before_capital_still_ends_a_sentence():
    # An added abbreviation keeps its period only before lower case, digits or brackets.
    assert split_sentences("Samples were stored at -80 C for 2 wk. The next day they thawed.") == [
        "Samples were stored at -80 C for 2 wk.", "The next day they thawed."]


def test_added_abbreviations_do_not_leak_into_pysbd():
    from pysbd.lang.english import English

    BiomedicalSentenceSplitter().split("Drugs were given i.v. at 5 mg/kg.")
    assert "i.v" not in English.Abbreviation.ABBREVIATIONS
    assert "cf" not in English.Abbreviation.PREPOSITIVE_ABBREVIATIONS


def test_long_documents_are_chunked_at_safe_boundaries_only():
    # ~40 sentences with trap periods: chunked (small chunks) and unchunked must agree.
    text = " ".join([t for t, _ in CASES[:13]] * 3)
    expected = [s for _, e in CASES[:13] for s in e] * 3
    chunked = BiomedicalSentenceSplitter(chunk_chars=200)
    assert len(chunked._chunks(" ".join(text.split()))) > 5
    assert chunked.split(text) == expected
    assert BiomedicalSentenceSplitter(chunk_chars=10**9).split(text) == expected

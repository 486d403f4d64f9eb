"""Regenerate the SAMPLE benchmark files in this folder (NER, ChemProt, QA) from hand-written
templates and entity lists: ``python -m biomegatron_nemo.samples.generate_samples``.

The samples are invented text in the style of BC5CDR, BLUE ChemProt and BioASQ-in-SQuAD — not
copies of those corpora — for tests, the demo and the quick start. Entity names recur across
train and dev (a chemical tends to appear with the diseases it causes or treats, as in real
abstracts), so a small model fine-tuned for a few minutes learns them. Output is deterministic.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

# chemical → diseases it is reported to cause (adverse) and to treat
CHEMICALS = {
    "cisplatin": (["nephrotoxicity", "ototoxicity", "acute renal failure", "hearing loss"], ["ovarian cancer", "lung cancer"]),
    "doxorubicin": (["cardiotoxicity", "cardiomyopathy", "heart failure"], ["breast cancer", "lymphoma"]),
    "haloperidol": (["catalepsy", "tardive dyskinesia", "parkinsonism"], ["schizophrenia", "delirium"]),
    "lithium": (["tremor", "hypothyroidism", "nephrogenic diabetes insipidus"], ["bipolar disorder", "mania"]),
    "cocaine": (["myocardial infarction", "seizures", "arrhythmia"], []),
    "gentamicin": (["nephrotoxicity", "ototoxicity", "acute renal failure"], ["sepsis"]),
    "amiodarone": (["pulmonary fibrosis", "hypothyroidism", "hepatotoxicity"], ["atrial fibrillation", "arrhythmia"]),
    "methotrexate": (["hepatotoxicity", "neutropenia", "mucositis"], ["rheumatoid arthritis", "psoriasis"]),
    "valproic acid": (["hepatotoxicity", "pancreatitis", "weight gain"], ["epilepsy", "bipolar disorder"]),
    "carbamazepine": (["agranulocytosis", "hyponatremia", "Stevens - Johnson syndrome"], ["epilepsy", "trigeminal neuralgia"]),
    "morphine": (["respiratory depression", "constipation", "hypotension"], ["pain"]),
    "warfarin": (["hemorrhage", "skin necrosis"], ["atrial fibrillation", "venous thrombosis"]),
    "heparin": (["thrombocytopenia", "hemorrhage"], ["venous thrombosis", "pulmonary embolism"]),
    "cyclophosphamide": (["hemorrhagic cystitis", "neutropenia", "infertility"], ["lymphoma", "lupus nephritis"]),
    "vancomycin": (["nephrotoxicity", "red man syndrome"], ["sepsis", "endocarditis"]),
    "dexamethasone": (["hyperglycemia", "osteoporosis", "hypertension"], ["cerebral edema", "asthma"]),
    "clozapine": (["agranulocytosis", "seizures", "myocarditis"], ["schizophrenia"]),
    "levodopa": (["dyskinesia", "hallucinations", "nausea"], ["Parkinson ' s disease"]),
    "puromycin aminonucleoside": (["proteinuria", "nephrotic syndrome"], []),
    "streptozotocin": (["diabetes", "hyperglycemia"], []),
    "isoproterenol": (["myocardial infarction", "cardiac hypertrophy", "tachycardia"], []),
    "pilocarpine": (["status epilepticus", "seizures"], ["glaucoma"]),
    "rifampicin": (["hepatotoxicity", "jaundice"], ["tuberculosis"]),
    "propranolol": (["bradycardia", "hypotension", "bronchospasm"], ["hypertension", "migraine"]),
    "tamoxifen": (["endometrial cancer", "venous thrombosis"], ["breast cancer"]),
    "ketamine": (["hallucinations", "hypertension"], ["depression", "pain"]),
    "caffeine": (["tachycardia", "insomnia"], ["apnea"]),
    "metformin": (["lactic acidosis", "diarrhea"], ["diabetes"]),
}

# {C}/{C2}: chemicals; {A}/{A2}: diseases the chemical causes; {T}: a disease it treats; {N}: number
ADVERSE = [
    "{C} - induced {A} in rats .",
    "Treatment with {C} caused {A} in {N} of {M} patients .",
    "{A} is a well - known adverse effect of {C} therapy .",
    "We report a case of {A} associated with {C} .",
    "The incidence of {A} was higher in patients receiving {C} than in those receiving {C2} .",
    "Pretreatment with {C2} prevented the development of {C} - induced {A} .",
    "No cases of {A} were observed during {C} administration .",
    "The mechanism of {C} - associated {A} remains unclear .",
    "A {N} - year - old woman developed {A} after receiving {C} .",
    "Co - administration of {C} and {C2} increased the risk of {A} .",
    "{A} developed within {N} days of starting {C} .",
    "Long - term use of {C} has been linked to {A} and {A2} .",
    "Risk factors for {A} included older age and prior exposure to {C} .",
    "{C} toxicity may present as {A} or {A2} .",
    "Histological examination revealed {A} in animals treated with {C} .",
    "These findings suggest that {C2} protects against {C} - induced {A} .",
    "Withdrawal of {C} led to resolution of {A} within {N} weeks .",
    "Serum {C} concentrations were higher in patients who developed {A} .",
]
THERAPY = [
    "{C} is widely used in the treatment of {T} .",
    "Patients with {T} were treated with {C} for {N} weeks .",
    "In conclusion , {C} should be used with caution in patients with {T} and pre - existing {A} .",
    "{C} remains a first - line drug for {T} despite the risk of {A} .",
    "We compared {C} with {C2} in {N} patients with {T} .",
]
PLAIN = [
    "Blood pressure and heart rate were monitored for 24 hours .",
    "Animals were divided into four groups of ten .",
    "Written informed consent was obtained from all participants .",
    "Data are expressed as mean +/- standard deviation .",
    "The study was approved by the local ethics committee .",
    "Statistical significance was set at P < 0.05 .",
    "Renal function was assessed by serum creatinine and blood urea nitrogen .",
    "Follow - up examinations were performed every three months .",
]


def _tag(phrase: str, etype: str):
    words = phrase.split()
    return [(w, ("B-" if i == 0 else "I-") + etype) for i, w in enumerate(words)]


def _ner_sentence(rng: random.Random):
    kind = rng.random()
    if kind < 0.08:
        return [(w, "O") for w in rng.choice(PLAIN).split()]
    chem = rng.choice(sorted(CHEMICALS))
    adverse, treats = CHEMICALS[chem]
    templates = THERAPY if treats and kind < 0.3 else ADVERSE
    template = rng.choice(templates)
    a, a2 = rng.sample(adverse, 2) if len(adverse) > 1 else (adverse[0], adverse[0])
    slots = {"C": _tag(chem, "Chemical"), "C2": _tag(rng.choice([c for c in CHEMICALS if c != chem]), "Chemical"),
             "A": _tag(a, "Disease"), "A2": _tag(a2, "Disease"),
             "T": _tag(rng.choice(treats), "Disease") if treats else [],
             "N": [(str(rng.randint(2, 60)), "O")], "M": [(str(rng.randint(61, 200)), "O")]}
    out = []
    for piece in template.split():
        if piece.startswith("{") and piece.endswith("}"):
            out.extend(slots[piece[1:-1]])
        else:
            out.append((piece, "O"))
    # sentence-initial lower-case chemical names are capitalised, as in abstracts
    out[0] = (out[0][0][:1].upper() + out[0][0][1:], out[0][1])
    return out


def write_ner(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            for w, t in _ner_sentence(rng):
                f.write(f"{w}\t{t}\n")
            f.write("\n")


CHEMPROT = {
    "CPR:3": ["@CHEMICAL$ increased the expression of @GENE$ in cultured hepatocytes.",
              "@CHEMICAL$ is a potent activator of @GENE$.",
              "Treatment with @CHEMICAL$ up-regulated @GENE$ mRNA levels twofold.",
              "@CHEMICAL$ induced @GENE$ protein in a time-dependent manner."],
    "CPR:4": ["@CHEMICAL$ inhibited @GENE$ activity in a dose-dependent manner.",
              "@CHEMICAL$ is a selective inhibitor of @GENE$ (IC50 = 12 nM).",
              "@CHEMICAL$ markedly reduced @GENE$ expression in tumour cells.",
              "The suppression of @GENE$ by @CHEMICAL$ was reversible."],
    "CPR:5": ["@CHEMICAL$ acts as a full agonist at the @GENE$.",
              "@CHEMICAL$, a selective @GENE$ agonist, lowered blood pressure."],
    "CPR:6": ["@CHEMICAL$, a competitive @GENE$ antagonist, blocked the response.",
              "The effect was abolished by the @GENE$ antagonist @CHEMICAL$."],
    "CPR:9": ["@GENE$ catalyzes the conversion of @CHEMICAL$ to its active metabolite.",
              "@CHEMICAL$ is metabolized mainly by @GENE$ in human liver microsomes.",
              "@GENE$ transports @CHEMICAL$ across the blood-brain barrier."],
    "false": ["@CHEMICAL$ and @GENE$ levels were measured in plasma samples.",
              "Mice lacking @GENE$ were given @CHEMICAL$ or saline for two weeks.",
              "@CHEMICAL$ did not affect @GENE$ activity at concentrations up to 100 microM.",
              "Expression of @GENE$ was assessed before @CHEMICAL$ treatment.",
              "@GENE$ polymorphisms were genotyped in patients receiving @CHEMICAL$.",
              "We studied @CHEMICAL$ in cells overexpressing @GENE$ and in control cells."],
}


def write_chemprot(path: Path, counts: dict, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for label, n in counts.items():
        for k in range(n):
            rows.append((label, rng.choice(CHEMPROT[label])))
    rng.shuffle(rows)
    with open(path, "w", encoding="utf-8") as f:
        for i, (label, text) in enumerate(rows):
            f.write(f"{seed}{i:04d}.T1.T2\t{text}\t{label}\n")


QA_FACTS = [
    ("Imatinib", "BCR-ABL", "chronic myeloid leukemia"), ("Trastuzumab", "HER2", "breast cancer"),
    ("Gefitinib", "EGFR", "non-small cell lung cancer"), ("Vemurafenib", "BRAF", "melanoma"),
    ("Rituximab", "CD20", "lymphoma"), ("Daratumumab", "CD38", "multiple myeloma"),
    ("Ivacaftor", "CFTR", "cystic fibrosis"), ("Tofacitinib", "JAK3", "rheumatoid arthritis"),
    ("Olaparib", "PARP", "ovarian cancer"), ("Bevacizumab", "VEGF", "colorectal cancer"),
    ("Sildenafil", "PDE5", "pulmonary arterial hypertension"), ("Atorvastatin", "HMG-CoA reductase", "hypercholesterolemia"),
    ("Warfarin", "VKORC1", "atrial fibrillation"), ("Omeprazole", "H+/K+ ATPase", "peptic ulcer disease"),
    ("Adalimumab", "TNF-alpha", "Crohn's disease"), ("Palbociclib", "CDK4/6", "breast cancer"),
    ("Crizotinib", "ALK", "non-small cell lung cancer"), ("Nusinersen", "SMN2", "spinal muscular atrophy"),
    ("Eculizumab", "complement C5", "paroxysmal nocturnal hemoglobinuria"), ("Tafamidis", "transthyretin", "amyloid cardiomyopathy"),
]
QA_CONTEXTS = [
    "{drug} is a targeted therapy that inhibits {target}. It was approved for the treatment of {disease} after phase III trials showed improved survival.",
    "In patients with {disease}, {drug} binds {target} and blocks downstream signalling; adverse events were mostly mild.",
]


def write_qa(path: Path, facts, offset: int) -> None:
    paragraphs = []
    for i, (drug, target, disease) in enumerate(facts):
        qid = f"s{offset + i:04d}"
        for k, template in enumerate(QA_CONTEXTS):
            context = template.format(drug=drug, target=target, disease=disease)
            qas = [{"id": f"{qid}t_{k:03d}", "question": f"What is the molecular target of {drug}?",
                    "answers": [{"text": target, "answer_start": context.index(target)}]},
                   {"id": f"{qid}d_{k:03d}", "question": f"Which disease is treated with {drug}?",
                    "answers": [{"text": disease, "answer_start": context.index(disease)}]}]
            paragraphs.append({"context": context, "qas": qas})
    doc = {"version": "sample", "data": [{"title": "SAMPLE - invented text, not BioASQ", "paragraphs": paragraphs}]}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(out_dir: Path = HERE) -> None:
    out_dir = Path(out_dir)
    for sub in ("ner", "chemprot", "qa"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    write_ner(out_dir / "ner" / "train.tsv", 220, seed=1)
    write_ner(out_dir / "ner" / "dev.tsv", 55, seed=2)
    write_chemprot(out_dir / "chemprot" / "train.tsv",
                   {"CPR:3": 10, "CPR:4": 14, "CPR:5": 6, "CPR:6": 6, "CPR:9": 8, "false": 30}, seed=1)
    write_chemprot(out_dir / "chemprot" / "dev.tsv",
                   {"CPR:3": 4, "CPR:4": 5, "CPR:5": 2, "CPR:6": 2, "CPR:9": 3, "false": 10}, seed=2)
    write_qa(out_dir / "qa" / "train.json", QA_FACTS[:15], 0)
    write_qa(out_dir / "qa" / "dev.json", QA_FACTS[15:], 15)


if __name__ == "__main__":
    main()

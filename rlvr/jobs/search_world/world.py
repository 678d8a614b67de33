"""A seeded fictional world: people, cities, countries and organisations, written out as a
Search-R1 passage corpus and FlashRAG-style QA sets.

Every fact is drawn at random from the seed, so no model can know the answer to a question about a
held-out person: it has to come from the corpus. That is what lets the embedded default job
(``rlvr train`` with no arguments) show that searching pays.

    world = build_world(WorldConfig(seed=0))
    paths = write_world(world, "runs/latest/world")   # corpus.jsonl, train/dev/test.jsonl

Files:

- ``corpus.jsonl``: ``{"id": "0", "contents": "\\"Title\\"\\ntext"}`` — one passage per entity, the
  title on the first line in quotes, as Search-R1's wiki-18 corpus.
- ``train.jsonl`` / ``dev.jsonl`` / ``test.jsonl``: ``{"id", "question", "golden_answers",
  "metadata"}`` — FlashRAG's fields; ``metadata`` holds the question type, hop count, subject and the
  ids of the supporting passages. The splits are disjoint by person, so no test subject appears in
  training questions.

Names are built from a small syllable inventory so that a tokenizer trained on the world's text
learns each name part as one or two tokens (short entities make copying easy for a tiny model).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
           "kr", "tr", "st", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "k")

#: question type → (template, hops). The answer kinds are city, organisation and country.
QUESTION_TYPES: dict[str, tuple[str, int]] = {
    "birthplace": ("Where was {subject} born?", 1),
    "employer": ("Who does {subject} work for?", 1),
    "birth_country": ("In which country was {subject} born?", 2),
}
PROFESSIONS = ("painter", "farmer", "doctor", "sailor", "teacher", "baker", "poet", "miner",
               "judge", "weaver")
ORG_KINDS = ("Guild", "Bank", "Works", "Press", "Trust")


@dataclass
class WorldConfig:
    seed: int = 0
    """Seed of every random choice: the same seed writes the same files, byte for byte."""
    num_people: int = 400
    """People; each gets one question of every type in ``question_types``."""
    num_cities: int = 40
    """Cities (birthplaces, organisation seats)."""
    num_countries: int = 12
    """Countries (each city lies in one)."""
    num_orgs: int = 30
    """Organisations (employers)."""
    dev_people: int = 40
    """People whose questions form the dev split."""
    test_people: int = 60
    """People whose questions form the test split (the rest are training)."""
    question_types: tuple[str, ...] = ("birthplace", "employer", "birth_country")
    """Which of :data:`QUESTION_TYPES` to ask."""


@dataclass
class Person:
    name: str
    birthplace: str
    employer: str
    profession: str
    birth_year: int


@dataclass
class World:
    config: WorldConfig
    people: list[Person]
    cities: dict[str, str]  # city → country
    countries: list[str]
    orgs: dict[str, str]  # organisation → seat (city)
    passages: list[dict] = field(default_factory=list)  # {"id", "contents"}
    title_to_id: dict[str, str] = field(default_factory=dict)
    splits: dict[str, list[dict]] = field(default_factory=dict)  # split → QA rows

    def person(self, name: str) -> Person:
        for p in self.people:
            if p.name == name:
                return p
        raise KeyError(f"no person {name!r} in the world")

    def answer_pool(self, qtype: str) -> list[str]:
        """Every entity that could answer a question of this type (what a guesser picks from)."""
        if qtype == "birthplace":
            return sorted(self.cities)
        if qtype == "employer":
            return sorted(self.orgs)
        if qtype == "birth_country":
            return list(self.countries)
        raise KeyError(f"unknown question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")

    def texts(self) -> list[str]:
        """Every text of the world (passages and questions), to train a tokenizer on."""
        out = [p["contents"] for p in self.passages]
        for rows in self.splits.values():
            out += [r["question"] + " " + " ".join(r["golden_answers"]) for r in rows]
        return out


def _unique_names(rng: random.Random, n: int, taken: set[str], syllables: tuple[int, int]) -> list[str]:
    out = []
    while len(out) < n:
        k = rng.randint(*syllables)
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(k)) + rng.choice(_CODAS)
        name = name.capitalize()
        if name not in taken and len(name) >= 3:
            taken.add(name)
            out.append(name)
    return out


def build_world(cfg: WorldConfig | None = None) -> World:
    """Draw a world from ``cfg.seed``: entities, facts, passages and the three QA splits."""
    cfg = cfg or WorldConfig()
    for q in cfg.question_types:
        if q not in QUESTION_TYPES:
            raise ValueError(f"world question type {q!r} unknown; known: {', '.join(QUESTION_TYPES)}")
    if cfg.dev_people + cfg.test_people >= cfg.num_people:
        raise ValueError(f"world: dev_people + test_people ({cfg.dev_people + cfg.test_people}) "
                         f"must be below num_people ({cfg.num_people})")
    rng = random.Random(cfg.seed)
    taken: set[str] = set()
    countries = _unique_names(rng, cfg.num_countries, taken, (2, 3))
    city_names = _unique_names(rng, cfg.num_cities, taken, (2, 2))
    # every country gets at least one city, so no country is unanswerable
    cities = {c: countries[i] if i < len(countries) else rng.choice(countries)
              for i, c in enumerate(city_names)}
    org_stems = _unique_names(rng, cfg.num_orgs, taken, (2, 2))
    orgs = {f"{s} {rng.choice(ORG_KINDS)}": rng.choice(city_names) for s in org_stems}
    # a person's name is a first and a last name from small pools: few distinct tokens, many people
    pool = max(8, int(cfg.num_people ** 0.5) + 6)
    firsts = _unique_names(rng, pool, taken, (1, 2))
    lasts = _unique_names(rng, pool, taken, (2, 2))
    names: list[str] = []
    seen: set[str] = set()
    if cfg.num_people > pool * pool:
        raise ValueError(f"world: num_people {cfg.num_people} exceeds the {pool * pool} name pairs")
    while len(names) < cfg.num_people:
        name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    org_names = list(orgs)
    people = [Person(n, rng.choice(city_names), rng.choice(org_names), rng.choice(PROFESSIONS),
                     rng.randint(1700, 1990)) for n in names]
    world = World(cfg, people, cities, countries, orgs)
    _write_passages(world, rng)
    _write_questions(world, rng)
    return world


def _write_passages(world: World, rng: random.Random) -> None:
    entries: list[tuple[str, str]] = []
    for p in world.people:
        entries.append((p.name, f"{p.name} was born in {p.birthplace}. {p.name} works for "
                                f"{p.employer} as a {p.profession}."))
    for city, country in world.cities.items():
        entries.append((city, f"{city} is a city in {country}."))
    for org, seat in world.orgs.items():
        entries.append((org, f"{org} is based in {seat}."))
    for country in world.countries:
        n = sum(1 for c in world.cities.values() if c == country)
        entries.append((country, f"{country} is a country with {n} cities."))
    rng.shuffle(entries)  # ids carry no hint of the entity kind
    for i, (title, text) in enumerate(entries):
        world.passages.append({"id": str(i), "contents": f'"{title}"\n{text}'})
        world.title_to_id[title] = str(i)


def _write_questions(world: World, rng: random.Random) -> None:
    order = list(range(len(world.people)))
    rng.shuffle(order)
    cfg = world.config
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[idx] = ("test" if rank < cfg.test_people else
                         "dev" if rank < cfg.test_people + cfg.dev_people else "train")
    world.splits = {"train": [], "dev": [], "test": []}
    for idx, p in enumerate(world.people):
        split = split_of[idx]
        for qtype in cfg.question_types:
            template, hops = QUESTION_TYPES[qtype]
            support = [world.title_to_id[p.name]]
            if qtype == "birthplace":
                answer = p.birthplace
            elif qtype == "employer":
                answer = p.employer
            else:
                answer = world.cities[p.birthplace]
                support.append(world.title_to_id[p.birthplace])
            rows = world.splits[split]
            rows.append({"id": f"{split}_{len(rows)}", "question": template.format(subject=p.name),
                         "golden_answers": [answer],
                         "metadata": {"type": qtype, "hops": hops, "subject": p.name,
                                      "support": support}})
    for rows in world.splits.values():
        rng.shuffle(rows)
        for i, r in enumerate(rows):
            r["id"] = r["id"].split("_")[0] + f"_{i}"


def _dump_jsonl(rows: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")


def write_world(world: World, out_dir: str | Path) -> dict[str, Path]:
    """Write ``corpus.jsonl``, ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` and ``world.json``
    (the facts, for inspection) to ``out_dir``; return name → path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"corpus": out / "corpus.jsonl"}
    _dump_jsonl(world.passages, paths["corpus"])
    for split, rows in world.splits.items():
        paths[split] = out / f"{split}.jsonl"
        _dump_jsonl(rows, paths[split])
    facts = {"config": {**asdict(world.config), "question_types": list(world.config.question_types)},
             "people": [asdict(p) for p in world.people], "cities": world.cities,
             "countries": world.countries, "orgs": world.orgs}
    paths["world"] = out / "world.json"
    paths["world"].write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return paths

#!/usr/bin/env python3
"""Writes the ifeval cross-check set: varied samples for all 25 IFEval ids.

Each line is {"id", "prompt", "response", "instruction_id_list", "kwargs"}.
Responses are built around the counting boundaries (N-1, N, N+1 words,
sentences, bullets, ...) and the edge cases of each rule, with a fixed seed
so that the file is reproducible:

    python3 benches/ifeval_samples.py > judges/tests/data/ifeval_samples.jsonl
"""

import json
import random

rng = random.Random(20241127)

WORDS = ("river stone light garden morning window quiet paper engine market "
         "winter coffee silver orange planet forest music letter bridge cloud").split()
SENTENCES = [
    "The river runs past the old mill.",
    "Mr. Smith arrived at 5 p.m. on Monday.",
    "Is this the right way to the station?",
    "We stayed home because of the rain!",
    "Dr. Lee met the U.S. delegation in Washington.",
    "It costs 3.5 dollars, e.g. at the market.",
    "She said \"stop.\" Then she left.",
    "The results (see Fig. 2) were clear.",
    "Wait... what happened next?",
    "Prices rose by 4.5% in Jan. and Feb. this year.",
    "He works for Acme Inc. in the city.",
    "They left at noon. Nobody followed.",
]
ENGLISH = ("the quick brown fox jumps over the lazy dog while the farmer watches "
           "from the porch and drinks his morning coffee in peace").split()


def words(n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def sentences(n):
    return " ".join(rng.choice(SENTENCES) for _ in range(n))


samples = []


def add(ids, kwargs, response, prompt="Follow the instructions."):
    samples.append({
        "id": f"s{len(samples):03d}",
        "prompt": prompt,
        "response": response,
        "instruction_id_list": ids,
        "kwargs": kwargs,
    })


def rel_cases(iid, key_n, key_rel, make, n, extra=None):
    """Counts n-1, n, n+1 under both relations."""
    for rel in ("less than", "at least"):
        for k in (n - 1, n, n + 1):
            kw = {key_n: n, key_rel: rel, **(extra or {})}
            add([iid], [kw], make(k))


# keywords
for kws, resp in [
    (["river", "stone"], "The River flows over a STONE."),
    (["river", "stone"], "The river flows over a rock."),
    (["cat"], "A concatenated string."),
    (["sun", "moon"], "Sunlight and moonlight."),
    (["blue sky"], "Under a blue  sky."),
    (["apple"], "No fruit here."),
]:
    add(["keywords:existence"], [{"keywords": kws}], resp)
for rel in ("less than", "at least"):
    for k in (1, 2, 3, 4):
        add(["keywords:frequency"], [{"keyword": "light", "frequency": 3, "relation": rel}],
            " ".join(["Light"] * k) + " and lighthouse" * (k % 2) + ".")
for fw, resp in [
    (["bad", "ugly"], "A good day."),
    (["bad", "ugly"], "Not BAD at all."),
    (["cat"], "Concatenate the files."),
    (["cat"], "The cat's toy."),
    (["dog"], "Dogs are fine."),
    (["ugly"], "ugly."),
]:
    add(["keywords:forbidden_words"], [{"forbidden_words": fw}], resp)
rel_cases("keywords:letter_frequency", "let_frequency", "let_relation",
          lambda k: "A" * k + " bcd efg " + "b" * 3, 5, {"letter": "a"})

# language
for lang, resp in [
    ("en", "The weather today is sunny and warm, perfect for a walk in the park."),
    ("en", "Le temps est ensoleillé et chaud, parfait pour une promenade dans le parc."),
    ("fr", "Le temps est ensoleillé et chaud, parfait pour une promenade dans le parc."),
    ("de", "Das Wetter ist heute sonnig und warm, perfekt für einen Spaziergang im Park."),
    ("es", "El tiempo hoy es soleado y cálido, perfecto para un paseo por el parque."),
    ("ru", "Сегодня солнечная и теплая погода, идеально подходит для прогулки в парке."),
    ("hi", "आज मौसम धूप और गर्म है, पार्क में टहलने के लिए बिल्कुल सही है।"),
    ("ja", "今日は晴れて暖かく、公園を散歩するのに最適です。"),
    ("ko", "오늘은 날씨가 맑고 따뜻해서 공원에서 산책하기에 딱 좋습니다."),
    ("it", "Il tempo oggi è soleggiato e caldo, perfetto per una passeggiata nel parco."),
    ("pt", "O tempo hoje está ensolarado e quente, perfeito para um passeio no parque."),
    ("en", "12345 67890"),
]:
    add(["language:response_language"], [{"language": lang}], resp)

# length constraints
rel_cases("length_constraints:number_sentences", "num_sentences", "relation", sentences, 4)
rel_cases("length_constraints:number_words", "num_words", "relation",
          lambda k: words(k) + ".", 30)
for resp, n in [
    ("First part.\n***\nSecond part.\n***\nThird part.", 3),
    ("First part.\n***\nSecond part.", 3),
    ("***\nFirst.\n***\nSecond.\n***", 2),
    ("First.\n***\n***\nSecond.", 2),
    ("One *** Two *** Three *** Four", 4),
    ("One\n\nTwo\n\nThree", 3),
]:
    add(["length_constraints:number_paragraphs"], [{"num_paragraphs": n}], resp)
for resp, n, nth, fw in [
    ("Intro text.\n\nSummer is here.\n\nEnd.", 3, 2, "summer"),
    ("Intro text.\n\n\"Summer, is here.\n\nEnd.", 3, 2, "summer"),
    ("Intro text.\n\nWinter is here.\n\nEnd.", 3, 2, "summer"),
    ("Intro text.\n\nSummer is here.", 3, 2, "summer"),
    ("Intro.\n\n\n\nSummer.\n\nEnd.", 3, 2, "summer"),
    ("Summer.\n\nTwo.", 2, 1, "Summer"),
]:
    add(["length_constraints:nth_paragraph_first_word"],
        [{"num_paragraphs": n, "nth_paragraph": nth, "first_word": fw}], resp)

# detectable content
for k in (1, 2, 3):
    add(["detectable_content:number_placeholders"], [{"num_placeholders": 2}],
        "Dear " + ", ".join(f"[field{i}]" for i in range(k)) + ".")
add(["detectable_content:number_placeholders"], [{"num_placeholders": 1}], "A [broken\n] one.")
for marker, resp in [
    ("P.S.", "Thanks.\nP.S. See you soon."),
    ("P.S.", "Thanks.\np. s. see you."),
    ("P.S.", "Thanks.\nPS see you."),
    ("P.P.S", "Thanks.\nP.P.S. One more thing."),
    ("P.P.S", "Thanks.\nP.S. One more thing."),
    ("P.S.", "Thanks. No postscript here."),
]:
    add(["detectable_content:postscript"], [{"postscript_marker": marker}], resp)

# detectable format
for k in (2, 3, 4):
    add(["detectable_format:number_bullet_lists"], [{"num_bullets": 3}],
        "List:\n" + "\n".join(f"* item {i}" for i in range(k)))
add(["detectable_format:number_bullet_lists"], [{"num_bullets": 2}], "- one\n  - two\n**bold** line")
add(["detectable_format:number_bullet_lists"], [{"num_bullets": 2}], "* one\n* two\n- three")
for resp in ["My answer is yes.", "Well, My answer is maybe. I think.", "my answer is no.", "No."]:
    add(["detectable_format:constrained_response"], [{}], resp)
for resp, n in [
    ("*one* and *two*", 2),
    ("*one* and *two*", 3),
    ("**bold** and *it*", 2),
    ("* * and ** **", 1),
    ("*a*\n*b*\n*c*", 3),
]:
    add(["detectable_format:number_highlighted_sections"], [{"num_highlights": n}], resp)
for resp, sp, n in [
    ("SECTION 1\nIntro\nSECTION 2\nBody", "SECTION", 2),
    ("SECTION 1\nIntro\nSECTION 2\nBody", "SECTION", 3),
    ("Section 1: a\nSection 2: b\nSection 3: c", "Section", 3),
    ("Section 1: a\nSECTION 2: b", "Section", 2),
    ("PARAGRAPH 1 x PARAGRAPH 2 y", "PARAGRAPH", 2),
]:
    add(["detectable_format:multiple_sections"], [{"section_spliter": sp, "num_sections": n}], resp)
for resp in ['{"a": 1, "b": [true, null]}', '```json\n{"a": 1}\n```', '```\n[1, 2]\n```',
             'Here is JSON: {"a": 1}', '{"a": 1,}', '"just a string"']:
    add(["detectable_format:json_format"], [{}], resp)
for resp in ["<<A Title>>\nBody.", "No title here.", "<< >> empty", "<<Line\nbreak>>"]:
    add(["detectable_format:title"], [{}], resp)

# combination
for resp in ["First answer.\n******\nSecond answer.", "Same.\n******\nSame.",
             "One.\n******\nTwo.\n******\nThree.", "******\nOne.\n******\nTwo.\n******",
             "One.\n************\nTwo."]:
    add(["combination:two_responses"], [{}], resp)
for resp, p in [("Write a poem about rain. Rain falls softly.", "Write a poem about rain."),
                ("  write a POEM about rain. Done.", "Write a poem about rain."),
                ("Sure! Write a poem about rain.", "Write a poem about rain.")]:
    add(["combination:repeat_prompt"], [{"prompt_to_repeat": p}], resp, prompt=p)

# start / end
for resp, phrase in [("Hope that helps. Any other questions?", "Any other questions?"),
                     ("\"Hope that helps. any other questions?\"", "Any other questions?"),
                     ("Any other questions? Yes.", "Any other questions?")]:
    add(["startend:end_checker"], [{"end_phrase": phrase}], resp)
for resp in ['"Quoted answer."', ' "Quoted" ', '"', 'Not quoted.', '"Half quoted.']:
    add(["startend:quotation"], [{}], resp)

# change case
rel_cases("change_case:capital_word_frequency", "capital_frequency", "capital_relation",
          lambda k: " ".join(["WORD"] * k) + " and some lowercase words.", 3)
for resp in ["I CAN'T DO IT, CANNOT. AT&T IS HERE.", "DON'T STOP"]:
    for n in (3, 5, 8):
        add(["change_case:capital_word_frequency"],
            [{"capital_frequency": n, "capital_relation": "at least"}], resp)
upper = " ".join(ENGLISH).upper() + "."
for resp in [upper, upper.replace("FOX", "fox"), "LE TEMPS EST BEAU ET CHAUD AUJOURD'HUI DANS LE PARC.", "12345"]:
    add(["change_case:english_capital"], [{}], resp)
lower = " ".join(ENGLISH) + "."
for resp in [lower, lower.replace("fox", "Fox"), "le temps est beau et chaud aujourd'hui dans le parc.", "123"]:
    add(["change_case:english_lowercase"], [{}], resp)

# punctuation
for resp in ["No commas here.", "One, two.", "Numbers like 1,000 count too."]:
    add(["punctuation:no_comma"], [{}], resp)

# combinations of several instructions, IFEval-style kwargs with nulls
ALL_KEYS = ["num_words", "relation", "keywords", "num_highlights", "end_phrase",
            "postscript_marker", "num_sentences", "capital_frequency", "capital_relation"]


def padded(kw):
    return {**{k: None for k in ALL_KEYS}, **kw}


for i in range(24):
    n = rng.randint(3, 8)
    body = sentences(n)
    if i % 3 == 0:
        body = body.replace(",", "")
    if i % 4 == 0:
        body += " *key point* and *another one*"
    if i % 2 == 0:
        body += " Any other questions?"
    add(["length_constraints:number_sentences", "punctuation:no_comma",
         "detectable_format:number_highlighted_sections", "startend:end_checker"],
        [padded({"num_sentences": 5, "relation": "at least"}), padded({}),
         padded({"num_highlights": 2}), padded({"end_phrase": "Any other questions?"})],
        body)

# sentence-splitting stress: abbreviations, initials, numbers, quotes
for text in [
    "J. R. R. Tolkien wrote books. He was British.",
    "The U.S. economy grew. Inflation fell.",
    "Call me at 5 p.m. Tomorrow is fine.",
    "It was 1.5 km long. We walked it.",
    "See the appendix, i.e. the last part. Then stop.",
    "\"Yes.\" \"No.\" \"Maybe.\"",
    "Item no. 5 is missing. Check it.",
    "First... second... third.",
    "What?! Really?! Yes!",
    "He scored 10. Then 20. Then 30.",
    "Visit example.com today. Or not.",
    "The meeting is on Sept. 5th at 3 p.m. in Room 4.",
]:
    for n in (2, 3, 4):
        add(["length_constraints:number_sentences"], [{"num_sentences": n, "relation": "at least"}], text)

# empty / whitespace responses fail
add(["punctuation:no_comma"], [{}], "   ")

for s in samples:
    print(json.dumps(s, ensure_ascii=False))

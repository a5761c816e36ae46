//! Language identification for `language:response_language` and the two
//! "English, all capitals / all lowercase" checks.
//!
//! The reference uses `langdetect` (a port of Google's language-detection,
//! 55 languages, ISO 639-1 codes, seeded by chance unless fixed). This judge
//! uses `whatlang` (trigram profiles, 69 languages, deterministic, no
//! allocation-heavy models), and maps langdetect's codes onto it. The two
//! can disagree on short or mixed-language texts; both give up on text with
//! no letters, which the reference (and so this judge) counts as followed.
//! langdetect codes that whatlang cannot detect (`cy`, `so`, `sq`, `sw`)
//! are rejected as bad metadata rather than silently failed.

use whatlang::Lang;

/// The whatlang language for a langdetect (ISO 639-1) code.
pub(crate) fn lang_for_code(code: &str) -> Option<Lang> {
    Some(match code {
        "af" => Lang::Afr,
        "ar" => Lang::Ara,
        "bg" => Lang::Bul,
        "bn" => Lang::Ben,
        "ca" => Lang::Cat,
        "cs" => Lang::Ces,
        "da" => Lang::Dan,
        "de" => Lang::Deu,
        "el" => Lang::Ell,
        "en" => Lang::Eng,
        "es" => Lang::Spa,
        "et" => Lang::Est,
        "fa" => Lang::Pes,
        "fi" => Lang::Fin,
        "fr" => Lang::Fra,
        "gu" => Lang::Guj,
        "he" => Lang::Heb,
        "hi" => Lang::Hin,
        "hr" => Lang::Hrv,
        "hu" => Lang::Hun,
        "id" => Lang::Ind,
        "it" => Lang::Ita,
        "ja" => Lang::Jpn,
        "kn" => Lang::Kan,
        "ko" => Lang::Kor,
        "lt" => Lang::Lit,
        "lv" => Lang::Lav,
        "mk" => Lang::Mkd,
        "ml" => Lang::Mal,
        "mr" => Lang::Mar,
        "ne" => Lang::Nep,
        "nl" => Lang::Nld,
        "no" => Lang::Nob,
        "pa" => Lang::Pan,
        "pl" => Lang::Pol,
        "pt" => Lang::Por,
        "ro" => Lang::Ron,
        "ru" => Lang::Rus,
        "sk" => Lang::Slk,
        "sl" => Lang::Slv,
        "sv" => Lang::Swe,
        "ta" => Lang::Tam,
        "te" => Lang::Tel,
        "th" => Lang::Tha,
        "tl" => Lang::Tgl,
        "tr" => Lang::Tur,
        "uk" => Lang::Ukr,
        "ur" => Lang::Urd,
        "vi" => Lang::Vie,
        "zh" | "zh-cn" | "zh-tw" => Lang::Cmn,
        _ => return None,
    })
}

/// The detected language, or `None` when the text gives no evidence (no
/// letters), where the reference counts the instruction as followed.
pub(crate) fn detect(text: &str) -> Option<Lang> {
    whatlang::detect_lang(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_and_detection_works() {
        assert_eq!(lang_for_code("en"), Some(Lang::Eng));
        assert_eq!(lang_for_code("fa"), Some(Lang::Pes));
        assert_eq!(lang_for_code("sw"), None);
        assert_eq!(
            detect("The quick brown fox jumps over the lazy dog near the river bank."),
            Some(Lang::Eng)
        );
        assert_eq!(
            detect("Le renard brun rapide saute par-dessus le chien paresseux."),
            Some(Lang::Fra)
        );
        assert_eq!(detect("12345 !!!"), None);
    }
}

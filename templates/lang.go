package templates

import (
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/language"
)

// NormalizeLang returns the base language of a BCP 47 tag, lower-case:
// "zh-CN", "zh_TW" and "zh-Hant" → "zh", "EN-us" → "en", "iw" → "he",
// "cmn" → "zh". It reports false for an empty, malformed or unknown tag
// ("english", "xx", "und").
func NormalizeLang(tag string) (string, bool) {
	tag = strings.TrimSpace(strings.ReplaceAll(tag, "_", "-"))
	if tag == "" {
		return "", false
	}
	t, err := language.All.Parse(tag)
	if err != nil {
		return "", false
	}
	b, conf := t.Base()
	switch b.String() {
	case "und", "mul", "mis", "zxx": // undetermined, multiple, uncoded, none
		return "", false
	}
	if conf < language.High {
		return "", false
	}
	return b.String(), true
}

// AcceptLanguage returns the base language of the most preferred tag of an
// HTTP Accept-Language header value (RFC 9110 §12.5.4) that names a known
// language, "" when none does. Tags with q=0 and "*" are ignored; unknown
// tags are skipped.
func AcceptLanguage(header string) string {
	best, bestQ := "", 0.0
	for part := range strings.SplitSeq(header, ",") {
		tag, params, _ := strings.Cut(part, ";")
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil || f < 0 || f > 1 {
					f = 0
				}
				q = f
			}
		}
		if q <= bestQ {
			continue // earlier tags win ties
		}
		if l, ok := NormalizeLang(tag); ok {
			best, bestQ = l, q
		}
	}
	return best
}

// detectRunes bounds how much of a text DetectLang looks at.
const detectRunes = 4096

// DetectLang guesses the language of a user's message: "ja" when kana are
// frequent among the CJK characters, "ko" when Hangul dominates them, "zh"
// when CJK characters are at least as many as the words in other scripts,
// and "en" otherwise (including for an empty text). A CJK character counts
// like one word, so "如何 reset my password" is "en" and "用 Python 写一个
// HTTP 服务" is "zh". Only the first 4096 runes are read.
func DetectLang(text string) string {
	var han, kana, hangul, words, n int
	inWord := false
	for _, r := range text {
		if n++; n > detectRunes {
			break
		}
		switch {
		case unicode.Is(unicode.Han, r):
			han++
			inWord = false
		case unicode.In(r, unicode.Hiragana, unicode.Katakana) || r == 'ー':
			kana++
			inWord = false
		case unicode.Is(unicode.Hangul, r):
			hangul++
			inWord = false
		case unicode.IsLetter(r) || unicode.IsDigit(r) && inWord:
			if !inWord {
				words++
				inWord = true
			}
		default:
			inWord = false
		}
	}
	cjk := han + kana + hangul
	switch {
	case cjk == 0 || cjk < words:
		return "en"
	case hangul > han+kana:
		return "ko"
	case kana > 0 && kana*4 >= han:
		return "ja"
	default:
		return "zh"
	}
}

// isCJK reports whether r is written without spaces between words (Han,
// kana, Hangul), so keywords in these scripts are matched as substrings.
func isCJK(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul) || r == 'ー'
}

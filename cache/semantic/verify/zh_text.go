package verify

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/edgecache/edgecache/embed/zh"
)

// zhText is one side of a Chinese comparison: its units (each Han
// character, each word of letters or digits), lower-cased after NFKC, with
// punctuation and spaces dropped.
type zhText struct {
	same  string   // zh.Canonical text, units only (punctuation and spaces dropped): the same-wording rule
	norm  string   // the same, built from the units kept
	units []string // in order
	nums  []string // units that are numbers (ASCII digits)
}

// zhMaxUnits bounds the units looked at per side.
const zhMaxUnits = 128

func zhAnalyze(text string) zhText {
	if len(text) > maxBytes {
		text = text[:maxBytes]
	}
	var t zhText
	text = zh.Canonical(text)
	t.same = zhUnitsOnly(text)
	var b strings.Builder
	word := -1 // start of the current word in text, or -1
	flush := func(end int) {
		if word >= 0 {
			w := text[word:end]
			t.units = append(t.units, w)
			if isDigits(w) {
				t.nums = append(t.nums, strings.TrimLeft(w, "0"))
			}
			b.WriteString(w)
			word = -1
		}
	}
	for i, r := range text {
		if len(t.units) >= zhMaxUnits {
			break
		}
		switch {
		case isHanRune(r):
			flush(i)
			if strings.ContainsRune(zhParticles, r) {
				continue
			}
			t.units = append(t.units, text[i:i+utf8.RuneLen(r)])
			b.WriteRune(r)
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if word >= 0 && isDigits(text[word:i]) != unicode.IsDigit(r) {
				flush(i) // "iphone12": a word and a number
			}
			if word < 0 {
				word = i
			}
		default:
			flush(i)
		}
	}
	flush(len(text))
	t.norm = b.String()
	t.nums = append(t.nums, zhNumerals(t.norm)...)
	return t
}

// zhNumeralChars spell numbers in Chinese; zhMeasures follow a number.
const (
	zhNumeralChars = "零一二三四五六七八九十百千万亿两"
	zhMeasures     = "个元块岁年月日天号次点分斤米克届级楼层期集章"
)

// zhNumerals returns the numbers spelled in Chinese in s: runs of two or
// more numeral characters ("二十", "三百"), or one before a measure word
// ("三个", "五元"). A lone 一 is usually not a number ("一下", "统一").
func zhNumerals(s string) []string {
	var out []string
	rs := []rune(s)
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && strings.ContainsRune(zhNumeralChars, rs[j]) {
			j++
		}
		switch {
		case j-i >= 2, j-i == 1 && rs[i] != '一' && j < len(rs) && strings.ContainsRune(zhMeasures, rs[j]):
			out = append(out, "#"+string(rs[i:j]))
		}
		if j == i {
			j++
		}
		i = j
	}
	return out
}

// zhUnitsOnly is s without punctuation, spaces and symbols.
func zhUnitsOnly(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isHanRune(r rune) bool { return r >= 0x2E80 && unicode.Is(unicode.Han, r) }

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsChinese reports whether text is mostly Chinese: at least a fifth of its
// letters are Han characters. The Chinese verifier scores such texts.
func IsChinese(text string) bool {
	if len(text) > maxBytes {
		text = text[:maxBytes]
	}
	han, letters := 0, 0
	for _, r := range text {
		if isHanRune(r) {
			han++
			letters++
		} else if unicode.IsLetter(r) {
			letters++
		}
	}
	return han > 0 && 5*han >= letters
}

// zhParticles end a sentence with a tone, not a meaning ("怎么学好英语呢"
// asks "怎么学好英语"); they are not units. 吗 stays: it makes a question
// a yes/no one.
const zhParticles = "呢啊吧呀哦嘛啦"

// zhFunction are characters paraphrases add or drop freely: particles,
// pronouns, copulas. They do not count as content on one side only (the
// learned weights still see them).
const zhFunction = "的了吗呢啊吧呀么嘛哦是在我你您他她它们这那个有就都也还和与及或把被给让请想要会能可以一下啦些"

// zhNegations negate what follows; zhNotNegation are words that begin
// with one but do not negate.
var (
	zhNegations   = []string{"不", "没", "别", "无", "非", "未", "莫", "勿", "甭"}
	zhNotNegation = []string{"非常", "别人", "别的", "无论", "不过", "不错", "不断", "不少", "不仅", "未来",
		"除非", "是非", "无聊", "不好意思", "差不多", "不然", "莫名", "并非常", "无线", "无限", "非法", "别墅", "区别", "分别", "特别", "级别", "类别", "性别", "识别", "告别", "无人机", "不同", "不一样",
		// A-not-A questions ask, they do not negate: "可不可以" is "可以吗".
		"能不能", "可不可以", "是不是", "有没有", "会不会", "要不要", "行不行", "好不好", "对不对", "用不用", "该不该", "能不", "可不"}
)

// zhNegationCount counts negating words in the normalised text.
func zhNegationCount(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		neg := false
		for _, w := range zhNegations {
			if strings.HasPrefix(s[i:], w) {
				neg = true
				break
			}
		}
		if neg {
			for _, w := range zhNotNegation {
				if strings.HasPrefix(s[i:], w) || (i >= 3 && strings.HasPrefix(s[i-3:], w)) {
					neg = false
					break
				}
			}
		}
		if neg {
			n++
		}
		i += size
		_ = r
	}
	return n
}

// Question classes of Chinese (and English) question words, in priority order.
const (
	zqNone uint8 = iota
	zqWhy
	zqQuantity
	zqWho
	zqWhere
	zqWhen
	zqHow
	zqWhat
	zqYesNo
)

var zhQuestionWords = []struct {
	w string
	c uint8
}{
	{"为什么", zqWhy}, {"为何", zqWhy}, {"为啥", zqWhy}, {"怎么会", zqWhy}, {"干嘛", zqWhy},
	{"多少", zqQuantity}, {"多久", zqQuantity}, {"多长", zqQuantity}, {"多大", zqQuantity}, {"几", zqQuantity},
	{"谁", zqWho},
	{"哪里", zqWhere}, {"哪儿", zqWhere}, {"在哪", zqWhere},
	{"什么时候", zqWhen}, {"何时", zqWhen},
	{"怎么", zqHow}, {"如何", zqHow}, {"怎样", zqHow}, {"咋", zqHow},
	{"什么", zqWhat}, {"啥", zqWhat}, {"哪", zqWhat},
	{"吗", zqYesNo}, {"是否", zqYesNo}, {"能否", zqYesNo}, {"可否", zqYesNo},
}

func zhQuestionClass(s string) uint8 {
	best := zqNone
	for _, q := range zhQuestionWords {
		if (best == zqNone || q.c < best) && strings.Contains(s, q.w) {
			best = q.c
		}
	}
	return best
}

// zhOpposites are pairs of words with opposite meanings: a prompt with one
// where the other has the other asks the opposite thing, however alike
// the rest ("花呗怎么开通" against "花呗怎么关闭").
var zhOpposites = [][2]string{
	{"开通", "关闭"}, {"开启", "关闭"}, {"打开", "关闭"}, {"开通", "取消"}, {"开通", "注销"},
	{"提高", "降低"}, {"增加", "减少"}, {"升高", "降低"}, {"上调", "下调"}, {"提升", "降低"},
	{"最高", "最低"}, {"最大", "最小"}, {"最多", "最少"}, {"最长", "最短"}, {"最早", "最晚"},
	{"上涨", "下跌"}, {"涨", "跌"}, {"买入", "卖出"}, {"购买", "出售"}, {"收入", "支出"},
	{"充值", "提现"}, {"转入", "转出"}, {"存入", "取出"}, {"借款", "还款"}, {"借钱", "还钱"},
	{"登录", "退出"}, {"登陆", "退出"}, {"绑定", "解绑"}, {"冻结", "解冻"}, {"启用", "停用"},
	{"成功", "失败"}, {"上传", "下载"}, {"导入", "导出"}, {"加密", "解密"}, {"之前", "之后"},
	{"以前", "以后"}, {"男", "女"}, {"冷", "热"}, {"胖", "瘦"}, {"贵", "便宜"}, {"早上", "晚上"},
	{"白天", "晚上"}, {"上个月", "下个月"}, {"上月", "下月"}, {"去年", "明年"}, {"昨天", "明天"},
	{"前天", "后天"}, {"容易", "困难"}, {"优点", "缺点"}, {"好处", "坏处"}, {"升级", "降级"},
	{"加", "减"}, {"正面", "反面"}, {"收款", "付款"}, {"提前", "延期"}, {"提额", "降额"}, {"加入", "退出"}, {"入口", "出口"}, {"进口", "出口"}, {"增值", "贬值"},
	{"maximum", "minimum"}, {"max", "min"},
}

// zhOpposite reports whether one side has one word of an opposite pair
// and the other side the other word, each absent from the other side.
func zhOpposite(a, b string) bool {
	for _, p := range zhOpposites {
		x, y := p[0], p[1]
		ax, ay := strings.Contains(a, x), strings.Contains(a, y)
		bx, by := strings.Contains(b, x), strings.Contains(b, y)
		if (ax && !ay && by && !bx) || (ay && !ax && bx && !by) {
			return true
		}
	}
	return false
}

// zhMultisetDiff counts how differently often the units both sides share
// occur: "聚精会神中的会是什么意思" against "聚精会神的聚是什么意思" ask about
// different characters of the same idiom, which sets of units miss.
func zhMultisetDiff(a, b []string) int {
	n := 0
	for i, u := range a {
		if indexOf(a[:i], u) >= 0 || indexOf(b, u) < 0 {
			continue
		}
		ca, cb := count(a, u), count(b, u)
		n += max(ca-cb, cb-ca)
	}
	return n
}

func count(s []string, x string) int {
	n := 0
	for _, y := range s {
		if y == x {
			n++
		}
	}
	return n
}

// zhRelations are words that relate what comes before them to what comes
// after in one direction: swapping the two sides asks another question.
var zhRelations = []string{"到", "比", "变成", "变为", "转入", "转到", "转成", "喜欢", "爱", "给", "叫", "追", "去", "往", "至", "配", "换成", "翻译成", "成", "转", "克", "对", "嫁"}

// zhSwapped reports whether the two sides put shared words on opposite
// sides of a relation word they share: "北京到成都" against "成都到北京",
// "男人喜欢女人" against "女人喜欢男人". Moving a topic to the front
// ("怎么开通花呗", "花呗怎么开通") has no relation word between and is not
// a swap.
func zhSwapped(a, b []string) bool {
	for _, rel := range zhRelations {
		ia, ib := zhFind(a, rel), zhFind(b, rel)
		if ia < 0 || ib < 0 {
			continue
		}
		n := len([]rune(rel))
		la, ra := a[:ia], a[ia+n:]
		lb, rb := b[:ib], b[ib+n:]
		if zhCrosses(la, rb, lb) && zhCrosses(ra, lb, rb) {
			return true
		}
	}
	return false
}

// zhCrosses reports whether a content unit of from is in to but not in not.
func zhCrosses(from, to, not []string) bool {
	for _, u := range from {
		if len(u) == 3 && containsRune(zhFunction, u) {
			continue
		}
		if indexOf(to, u) >= 0 && indexOf(not, u) < 0 {
			return true
		}
	}
	return false
}

// zhFind is the index of the first unit where the units spell w, or -1.
func zhFind(us []string, w string) int {
	for i := range us {
		j, rest := i, w
		for j < len(us) && rest != "" && len(us[j]) <= len(rest) && rest[:len(us[j])] == us[j] {
			rest = rest[len(us[j]):]
			j++
		}
		if rest == "" {
			return i
		}
	}
	return -1
}

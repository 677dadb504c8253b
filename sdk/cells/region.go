package cells

import "strings"

// Regions as the hub knows them.
const (
	// Global is the region of a cell that spans every country.
	Global = "global"
)

// Continents are the continent regions the hub accepts.
var Continents = []string{"africa", "antarctica", "asia", "europe", "north-america", "oceania", "south-america"}

// countriesByContinent lists every ISO 3166-1 alpha-2 code (and XK, Kosovo,
// in common use) under one continent of the seven-continent model. North
// America includes Central America and the Caribbean. A country on two
// continents is placed by its capital (Russia in Europe; Turkey, Georgia,
// Armenia, Azerbaijan and Kazakhstan in Asia; Egypt in Africa); Cyprus is
// placed in Europe. The uninhabited southern islands (Bouvet Island, South
// Georgia, Heard and McDonald Islands, the French Southern Territories) are
// placed with Antarctica.
var countriesByContinent = map[string]string{
	"africa": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY " +
		"MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
	"antarctica": "AQ BV GS HM TF",
	"asia": "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA " +
		"LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
	"europe": "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT " +
		"JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
	"north-america": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ " +
		"MS MX NI PA PM PR SV SX TC TT US VC VG VI",
	"oceania":       "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
	"south-america": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
}

// continentOf maps a country code to its continent.
var continentOf = func() map[string]string {
	m := make(map[string]string, 256)
	for cont, list := range countriesByContinent {
		for _, cc := range strings.Fields(list) {
			m[cc] = cont
		}
	}
	return m
}()

// Continent returns the continent of an ISO 3166-1 alpha-2 country code
// ("DE" → "europe") and whether the code is known.
func Continent(country string) (string, bool) {
	c, ok := continentOf[country]
	return c, ok
}

func isContinent(r string) bool {
	for _, c := range Continents {
		if r == c {
			return true
		}
	}
	return false
}

// regionAt returns region coarsened to level: a country at LevelCountry, its
// continent at LevelContinent, and Global from LevelGlobal on. An empty region
// is Global.
func regionAt(region string, l Level) string {
	switch {
	case region == "" || region == Global || l >= LevelGlobal:
		return Global
	case l == LevelCountry:
		return region
	}
	if c, ok := continentOf[region]; ok {
		return c
	}
	return region // already a continent
}

// OSVersion returns the OS version of an OS build: the first three
// dot-separated parts on Windows ("10.0.22631.3880" → "10.0.22631"), the first
// two elsewhere ("14.5.1" → "14.5", "6.8.0-45-generic" → "6.8"), cut at the
// first character that is not a letter or digit. A build that is already a
// version is returned as it is.
func OSVersion(osFamily, osBuild string) string {
	parts := 2
	if osFamily == "windows" {
		parts = 3
	}
	dots := 0
	for i := 0; i < len(osBuild); i++ {
		c := osBuild[i]
		switch {
		case c == '.':
			dots++
			if dots == parts {
				return osBuild[:i]
			}
		case !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'):
			if i == 0 {
				return osBuild
			}
			return osBuild[:i]
		}
	}
	return osBuild
}

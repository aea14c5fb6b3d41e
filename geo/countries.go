package geo

// Country reference points: one point per ISO 3166-1 alpha-2 code, used to
// give coordinates to lookups that only know the country.
//
// Sources:
//   - latitude and longitude: Google's DSPL canonical countries dataset,
//     https://developers.google.com/public-data/docs/canonical/countries_csv
//     (the point is a country centre chosen by that dataset, not a capital);
//   - continent: the continent column of GeoNames countryInfo.txt,
//     https://download.geonames.org/export/dump/countryInfo.txt
//     (AF Africa, AN Antarctica, AS Asia, EU Europe, NA North America,
//     OC Oceania, SA South America).
//
// Codes the Google dataset lacks but DB-IP uses are added by hand and marked
// "added": AX, BL, BQ, CW, MF, SS, SX, and UM (Google lists it without a
// point; Wake Island is used). XK (Kosovo, a user-assigned code) and AN
// (Netherlands Antilles, withdrawn in 2010) are kept from the Google dataset;
// its non-ISO GZ (Gaza Strip) entry is left out (PS covers it).

// countryPoint is one row of countryPoints.
type countryPoint struct {
	code      string
	continent string
	lat, lon  float64
}

// countryPoints is sorted by code; CountryPoint searches it.
var countryPoints = [...]countryPoint{
	{"AD", "EU", 42.546245, 1.601554},     // Andorra
	{"AE", "AS", 23.424076, 53.847818},    // United Arab Emirates
	{"AF", "AS", 33.93911, 67.709953},     // Afghanistan
	{"AG", "NA", 17.060816, -61.796428},   // Antigua and Barbuda
	{"AI", "NA", 18.220554, -63.068615},   // Anguilla
	{"AL", "EU", 41.153332, 20.168331},    // Albania
	{"AM", "AS", 40.069099, 45.038189},    // Armenia
	{"AN", "NA", 12.226079, -69.060087},   // Netherlands Antilles
	{"AO", "AF", -11.202692, 17.873887},   // Angola
	{"AQ", "AN", -75.250973, -0.071389},   // Antarctica
	{"AR", "SA", -38.416097, -63.616672},  // Argentina
	{"AS", "OC", -14.270972, -170.132217}, // American Samoa
	{"AT", "EU", 47.516231, 14.550072},    // Austria
	{"AU", "OC", -25.274398, 133.775136},  // Australia
	{"AW", "NA", 12.52111, -69.968338},    // Aruba
	{"AX", "EU", 60.1785, 19.9156},        // Åland Islands (added)
	{"AZ", "AS", 40.143105, 47.576927},    // Azerbaijan
	{"BA", "EU", 43.915886, 17.679076},    // Bosnia and Herzegovina
	{"BB", "NA", 13.193887, -59.543198},   // Barbados
	{"BD", "AS", 23.684994, 90.356331},    // Bangladesh
	{"BE", "EU", 50.503887, 4.469936},     // Belgium
	{"BF", "AF", 12.238333, -1.561593},    // Burkina Faso
	{"BG", "EU", 42.733883, 25.48583},     // Bulgaria
	{"BH", "AS", 25.930414, 50.637772},    // Bahrain
	{"BI", "AF", -3.373056, 29.918886},    // Burundi
	{"BJ", "AF", 9.30769, 2.315834},       // Benin
	{"BL", "NA", 17.9, -62.833333},        // Saint Barthélemy (added)
	{"BM", "NA", 32.321384, -64.75737},    // Bermuda
	{"BN", "AS", 4.535277, 114.727669},    // Brunei
	{"BO", "SA", -16.290154, -63.588653},  // Bolivia
	{"BQ", "NA", 12.178361, -68.238534},   // Caribbean Netherlands (added)
	{"BR", "SA", -14.235004, -51.92528},   // Brazil
	{"BS", "NA", 25.03428, -77.39628},     // Bahamas
	{"BT", "AS", 27.514162, 90.433601},    // Bhutan
	{"BV", "AN", -54.423199, 3.413194},    // Bouvet Island
	{"BW", "AF", -22.328474, 24.684866},   // Botswana
	{"BY", "EU", 53.709807, 27.953389},    // Belarus
	{"BZ", "NA", 17.189877, -88.49765},    // Belize
	{"CA", "NA", 56.130366, -106.346771},  // Canada
	{"CC", "AS", -12.164165, 96.870956},   // Cocos (Keeling) Islands
	{"CD", "AF", -4.038333, 21.758664},    // Congo (DRC)
	{"CF", "AF", 6.611111, 20.939444},     // Central African Republic
	{"CG", "AF", -0.228021, 15.827659},    // Congo (Republic)
	{"CH", "EU", 46.818188, 8.227512},     // Switzerland
	{"CI", "AF", 7.539989, -5.54708},      // Côte d'Ivoire
	{"CK", "OC", -21.236736, -159.777671}, // Cook Islands
	{"CL", "SA", -35.675147, -71.542969},  // Chile
	{"CM", "AF", 7.369722, 12.354722},     // Cameroon
	{"CN", "AS", 35.86166, 104.195397},    // China
	{"CO", "SA", 4.570868, -74.297333},    // Colombia
	{"CR", "NA", 9.748917, -83.753428},    // Costa Rica
	{"CU", "NA", 21.521757, -77.781167},   // Cuba
	{"CV", "AF", 16.002082, -24.013197},   // Cape Verde
	{"CW", "NA", 12.16957, -68.990021},    // Curaçao (added)
	{"CX", "OC", -10.447525, 105.690449},  // Christmas Island
	{"CY", "EU", 35.126413, 33.429859},    // Cyprus
	{"CZ", "EU", 49.817492, 15.472962},    // Czech Republic
	{"DE", "EU", 51.165691, 10.451526},    // Germany
	{"DJ", "AF", 11.825138, 42.590275},    // Djibouti
	{"DK", "EU", 56.26392, 9.501785},      // Denmark
	{"DM", "NA", 15.414999, -61.370976},   // Dominica
	{"DO", "NA", 18.735693, -70.162651},   // Dominican Republic
	{"DZ", "AF", 28.033886, 1.659626},     // Algeria
	{"EC", "SA", -1.831239, -78.183406},   // Ecuador
	{"EE", "EU", 58.595272, 25.013607},    // Estonia
	{"EG", "AF", 26.820553, 30.802498},    // Egypt
	{"EH", "AF", 24.215527, -12.885834},   // Western Sahara
	{"ER", "AF", 15.179384, 39.782334},    // Eritrea
	{"ES", "EU", 40.463667, -3.74922},     // Spain
	{"ET", "AF", 9.145, 40.489673},        // Ethiopia
	{"FI", "EU", 61.92411, 25.748151},     // Finland
	{"FJ", "OC", -16.578193, 179.414413},  // Fiji
	{"FK", "SA", -51.796253, -59.523613},  // Falkland Islands
	{"FM", "OC", 7.425554, 150.550812},    // Micronesia
	{"FO", "EU", 61.892635, -6.911806},    // Faroe Islands
	{"FR", "EU", 46.227638, 2.213749},     // France
	{"GA", "AF", -0.803689, 11.609444},    // Gabon
	{"GB", "EU", 55.378051, -3.435973},    // United Kingdom
	{"GD", "NA", 12.262776, -61.604171},   // Grenada
	{"GE", "AS", 42.315407, 43.356892},    // Georgia
	{"GF", "SA", 3.933889, -53.125782},    // French Guiana
	{"GG", "EU", 49.465691, -2.585278},    // Guernsey
	{"GH", "AF", 7.946527, -1.023194},     // Ghana
	{"GI", "EU", 36.137741, -5.345374},    // Gibraltar
	{"GL", "NA", 71.706936, -42.604303},   // Greenland
	{"GM", "AF", 13.443182, -15.310139},   // Gambia
	{"GN", "AF", 9.945587, -9.696645},     // Guinea
	{"GP", "NA", 16.995971, -62.067641},   // Guadeloupe
	{"GQ", "AF", 1.650801, 10.267895},     // Equatorial Guinea
	{"GR", "EU", 39.074208, 21.824312},    // Greece
	{"GS", "AN", -54.429579, -36.587909},  // South Georgia and the South Sandwich Islands
	{"GT", "NA", 15.783471, -90.230759},   // Guatemala
	{"GU", "OC", 13.444304, 144.793731},   // Guam
	{"GW", "AF", 11.803749, -15.180413},   // Guinea-Bissau
	{"GY", "SA", 4.860416, -58.93018},     // Guyana
	{"HK", "AS", 22.396428, 114.109497},   // Hong Kong
	{"HM", "AN", -53.08181, 73.504158},    // Heard Island and McDonald Islands
	{"HN", "NA", 15.199999, -86.241905},   // Honduras
	{"HR", "EU", 45.1, 15.2},              // Croatia
	{"HT", "NA", 18.971187, -72.285215},   // Haiti
	{"HU", "EU", 47.162494, 19.503304},    // Hungary
	{"ID", "AS", -0.789275, 113.921327},   // Indonesia
	{"IE", "EU", 53.41291, -8.24389},      // Ireland
	{"IL", "AS", 31.046051, 34.851612},    // Israel
	{"IM", "EU", 54.236107, -4.548056},    // Isle of Man
	{"IN", "AS", 20.593684, 78.96288},     // India
	{"IO", "AS", -6.343194, 71.876519},    // British Indian Ocean Territory
	{"IQ", "AS", 33.223191, 43.679291},    // Iraq
	{"IR", "AS", 32.427908, 53.688046},    // Iran
	{"IS", "EU", 64.963051, -19.020835},   // Iceland
	{"IT", "EU", 41.87194, 12.56738},      // Italy
	{"JE", "EU", 49.214439, -2.13125},     // Jersey
	{"JM", "NA", 18.109581, -77.297508},   // Jamaica
	{"JO", "AS", 30.585164, 36.238414},    // Jordan
	{"JP", "AS", 36.204824, 138.252924},   // Japan
	{"KE", "AF", -0.023559, 37.906193},    // Kenya
	{"KG", "AS", 41.20438, 74.766098},     // Kyrgyzstan
	{"KH", "AS", 12.565679, 104.990963},   // Cambodia
	{"KI", "OC", -3.370417, -168.734039},  // Kiribati
	{"KM", "AF", -11.875001, 43.872219},   // Comoros
	{"KN", "NA", 17.357822, -62.782998},   // Saint Kitts and Nevis
	{"KP", "AS", 40.339852, 127.510093},   // North Korea
	{"KR", "AS", 35.907757, 127.766922},   // South Korea
	{"KW", "AS", 29.31166, 47.481766},     // Kuwait
	{"KY", "NA", 19.513469, -80.566956},   // Cayman Islands
	{"KZ", "AS", 48.019573, 66.923684},    // Kazakhstan
	{"LA", "AS", 19.85627, 102.495496},    // Laos
	{"LB", "AS", 33.854721, 35.862285},    // Lebanon
	{"LC", "NA", 13.909444, -60.978893},   // Saint Lucia
	{"LI", "EU", 47.166, 9.555373},        // Liechtenstein
	{"LK", "AS", 7.873054, 80.771797},     // Sri Lanka
	{"LR", "AF", 6.428055, -9.429499},     // Liberia
	{"LS", "AF", -29.609988, 28.233608},   // Lesotho
	{"LT", "EU", 55.169438, 23.881275},    // Lithuania
	{"LU", "EU", 49.815273, 6.129583},     // Luxembourg
	{"LV", "EU", 56.879635, 24.603189},    // Latvia
	{"LY", "AF", 26.3351, 17.228331},      // Libya
	{"MA", "AF", 31.791702, -7.09262},     // Morocco
	{"MC", "EU", 43.750298, 7.412841},     // Monaco
	{"MD", "EU", 47.411631, 28.369885},    // Moldova
	{"ME", "EU", 42.708678, 19.37439},     // Montenegro
	{"MF", "NA", 18.08255, -63.052251},    // Saint Martin (added)
	{"MG", "AF", -18.766947, 46.869107},   // Madagascar
	{"MH", "OC", 7.131474, 171.184478},    // Marshall Islands
	{"MK", "EU", 41.608635, 21.745275},    // North Macedonia
	{"ML", "AF", 17.570692, -3.996166},    // Mali
	{"MM", "AS", 21.913965, 95.956223},    // Myanmar
	{"MN", "AS", 46.862496, 103.846656},   // Mongolia
	{"MO", "AS", 22.198745, 113.543873},   // Macau
	{"MP", "OC", 17.33083, 145.38469},     // Northern Mariana Islands
	{"MQ", "NA", 14.641528, -61.024174},   // Martinique
	{"MR", "AF", 21.00789, -10.940835},    // Mauritania
	{"MS", "NA", 16.742498, -62.187366},   // Montserrat
	{"MT", "EU", 35.937496, 14.375416},    // Malta
	{"MU", "AF", -20.348404, 57.552152},   // Mauritius
	{"MV", "AS", 3.202778, 73.22068},      // Maldives
	{"MW", "AF", -13.254308, 34.301525},   // Malawi
	{"MX", "NA", 23.634501, -102.552784},  // Mexico
	{"MY", "AS", 4.210484, 101.975766},    // Malaysia
	{"MZ", "AF", -18.665695, 35.529562},   // Mozambique
	{"NA", "AF", -22.95764, 18.49041},     // Namibia
	{"NC", "OC", -20.904305, 165.618042},  // New Caledonia
	{"NE", "AF", 17.607789, 8.081666},     // Niger
	{"NF", "OC", -29.040835, 167.954712},  // Norfolk Island
	{"NG", "AF", 9.081999, 8.675277},      // Nigeria
	{"NI", "NA", 12.865416, -85.207229},   // Nicaragua
	{"NL", "EU", 52.132633, 5.291266},     // Netherlands
	{"NO", "EU", 60.472024, 8.468946},     // Norway
	{"NP", "AS", 28.394857, 84.124008},    // Nepal
	{"NR", "OC", -0.522778, 166.931503},   // Nauru
	{"NU", "OC", -19.054445, -169.867233}, // Niue
	{"NZ", "OC", -40.900557, 174.885971},  // New Zealand
	{"OM", "AS", 21.512583, 55.923255},    // Oman
	{"PA", "NA", 8.537981, -80.782127},    // Panama
	{"PE", "SA", -9.189967, -75.015152},   // Peru
	{"PF", "OC", -17.679742, -149.406843}, // French Polynesia
	{"PG", "OC", -6.314993, 143.95555},    // Papua New Guinea
	{"PH", "AS", 12.879721, 121.774017},   // Philippines
	{"PK", "AS", 30.375321, 69.345116},    // Pakistan
	{"PL", "EU", 51.919438, 19.145136},    // Poland
	{"PM", "NA", 46.941936, -56.27111},    // Saint Pierre and Miquelon
	{"PN", "OC", -24.703615, -127.439308}, // Pitcairn Islands
	{"PR", "NA", 18.220833, -66.590149},   // Puerto Rico
	{"PS", "AS", 31.952162, 35.233154},    // Palestinian Territories
	{"PT", "EU", 39.399872, -8.224454},    // Portugal
	{"PW", "OC", 7.51498, 134.58252},      // Palau
	{"PY", "SA", -23.442503, -58.443832},  // Paraguay
	{"QA", "AS", 25.354826, 51.183884},    // Qatar
	{"RE", "AF", -21.115141, 55.536384},   // Réunion
	{"RO", "EU", 45.943161, 24.96676},     // Romania
	{"RS", "EU", 44.016521, 21.005859},    // Serbia
	{"RU", "EU", 61.52401, 105.318756},    // Russia
	{"RW", "AF", -1.940278, 29.873888},    // Rwanda
	{"SA", "AS", 23.885942, 45.079162},    // Saudi Arabia
	{"SB", "OC", -9.64571, 160.156194},    // Solomon Islands
	{"SC", "AF", -4.679574, 55.491977},    // Seychelles
	{"SD", "AF", 12.862807, 30.217636},    // Sudan
	{"SE", "EU", 60.128161, 18.643501},    // Sweden
	{"SG", "AS", 1.352083, 103.819836},    // Singapore
	{"SH", "AF", -24.143474, -10.030696},  // Saint Helena
	{"SI", "EU", 46.151241, 14.995463},    // Slovenia
	{"SJ", "EU", 77.553604, 23.670272},    // Svalbard and Jan Mayen
	{"SK", "EU", 48.669026, 19.699024},    // Slovakia
	{"SL", "AF", 8.460555, -11.779889},    // Sierra Leone
	{"SM", "EU", 43.94236, 12.457777},     // San Marino
	{"SN", "AF", 14.497401, -14.452362},   // Senegal
	{"SO", "AF", 5.152149, 46.199616},     // Somalia
	{"SR", "SA", 3.919305, -56.027783},    // Suriname
	{"SS", "AF", 6.876992, 31.306978},     // South Sudan (added)
	{"ST", "AF", 0.18636, 6.613081},       // São Tomé and Príncipe
	{"SV", "NA", 13.794185, -88.89653},    // El Salvador
	{"SX", "NA", 18.04248, -63.05483},     // Sint Maarten (added)
	{"SY", "AS", 34.802075, 38.996815},    // Syria
	{"SZ", "AF", -26.522503, 31.465866},   // Eswatini
	{"TC", "NA", 21.694025, -71.797928},   // Turks and Caicos Islands
	{"TD", "AF", 15.454166, 18.732207},    // Chad
	{"TF", "AN", -49.280366, 69.348557},   // French Southern Territories
	{"TG", "AF", 8.619543, 0.824782},      // Togo
	{"TH", "AS", 15.870032, 100.992541},   // Thailand
	{"TJ", "AS", 38.861034, 71.276093},    // Tajikistan
	{"TK", "OC", -8.967363, -171.855881},  // Tokelau
	{"TL", "OC", -8.874217, 125.727539},   // Timor-Leste
	{"TM", "AS", 38.969719, 59.556278},    // Turkmenistan
	{"TN", "AF", 33.886917, 9.537499},     // Tunisia
	{"TO", "OC", -21.178986, -175.198242}, // Tonga
	{"TR", "AS", 38.963745, 35.243322},    // Turkey
	{"TT", "NA", 10.691803, -61.222503},   // Trinidad and Tobago
	{"TV", "OC", -7.109535, 177.64933},    // Tuvalu
	{"TW", "AS", 23.69781, 120.960515},    // Taiwan
	{"TZ", "AF", -6.369028, 34.888822},    // Tanzania
	{"UA", "EU", 48.379433, 31.16558},     // Ukraine
	{"UG", "AF", 1.373333, 32.290275},     // Uganda
	{"UM", "OC", 19.2823, 166.647},        // U.S. Minor Outlying Islands (Wake Island) (added)
	{"US", "NA", 37.09024, -95.712891},    // United States
	{"UY", "SA", -32.522779, -55.765835},  // Uruguay
	{"UZ", "AS", 41.377491, 64.585262},    // Uzbekistan
	{"VA", "EU", 41.902916, 12.453389},    // Vatican City
	{"VC", "NA", 12.984305, -61.287228},   // Saint Vincent and the Grenadines
	{"VE", "SA", 6.42375, -66.58973},      // Venezuela
	{"VG", "NA", 18.420695, -64.639968},   // British Virgin Islands
	{"VI", "NA", 18.335765, -64.896335},   // U.S. Virgin Islands
	{"VN", "AS", 14.058324, 108.277199},   // Vietnam
	{"VU", "OC", -15.376706, 166.959158},  // Vanuatu
	{"WF", "OC", -13.768752, -177.156097}, // Wallis and Futuna
	{"WS", "OC", -13.759029, -172.104629}, // Samoa
	{"XK", "EU", 42.602636, 20.902977},    // Kosovo
	{"YE", "AS", 15.552727, 48.516388},    // Yemen
	{"YT", "AF", -12.8275, 45.166244},     // Mayotte
	{"ZA", "AF", -30.559482, 22.937506},   // South Africa
	{"ZM", "AF", -13.133897, 27.849332},   // Zambia
	{"ZW", "AF", -19.015438, 29.154857},   // Zimbabwe
}

// CountryPoint returns the reference point and continent of an ISO 3166-1
// alpha-2 country code (case-insensitive). ok is false for codes it does not
// know, such as "ZZ" or "".
func CountryPoint(code string) (lat, lon float64, continent string, ok bool) {
	if len(code) != 2 {
		return 0, 0, "", false
	}
	p := findCountry([2]byte{upper(code[0]), upper(code[1])})
	if p == nil {
		return 0, 0, "", false
	}
	return p.lat, p.lon, p.continent, true
}

// findCountry returns the row of an upper-case code, or nil.
func findCountry(key [2]byte) *countryPoint {
	lo, hi := 0, len(countryPoints)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		c := countryPoints[mid].code
		if c[0] < key[0] || (c[0] == key[0] && c[1] < key[1]) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(countryPoints) {
		if p := &countryPoints[lo]; p.code[0] == key[0] && p.code[1] == key[1] {
			return p
		}
	}
	return nil
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

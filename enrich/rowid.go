package enrich

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// rowIDs are the ids rows carry in a request: the two-letter strings that
// are a single token both in o200k_base (the gpt-4o, gpt-4.1 and o-series
// encoding) and in cl100k_base (gpt-4, gpt-3.5), 622 of the 676. An id
// costs one token each time the answer writes it. TestRowIDsAreSingleTokens
// recomputes the list with tiktoken and fails if it differs.
var rowIDs = strings.Fields(singleTokenIDs)

const singleTokenIDs = "" +
	"aa ab ac ad ae af ag ah ai aj ak al am an ao ap aq ar as at au av aw ax ay az " +
	"ba bb bc bd be bf bg bh bi bj bk bl bm bn bo bp br bs bt bu bv bw bx by bz " +
	"ca cb cc cd ce cf cg ch ci cj ck cl cm cn co cp cq cr cs ct cu cv cw cx cy cz " +
	"da db dc dd de df dg dh di dj dk dl dm dn do dp dq dr ds dt du dv dw dx dy dz " +
	"ea eb ec ed ee ef eg eh ei ej ek el em en eo ep eq er es et eu ev ew ex ey ez " +
	"fa fb fc fd fe ff fg fh fi fk fl fm fn fo fp fq fr fs ft fu fv fw fx fy " +
	"ga gb gc gd ge gf gg gh gi gl gm gn go gp gr gs gt gu gv gw gx gy gz " +
	"ha hb hc hd he hf hg hh hi hk hl hm hn ho hp hq hr hs ht hu hv hw hx hy hz " +
	"ia ib ic id ie if ig ih ii ij ik il im in io ip iq ir is it iu iv iw ix iy iz " +
	"ja jb jc jd je jf jh ji jj jk jl jm jn jo jp jq jr js jt ju " +
	"ka kb kc kd ke kf kg kh ki kj kk kl km kn ko kp kr ks kt ku kv kw ky " +
	"la lb lc ld le lf lg lh li lj lk ll lm ln lo lp lr ls lt lu lv lw lx ly lz " +
	"ma mb mc md me mf mg mh mi mj mk ml mm mn mo mp mq mr ms mt mu mv mw mx my " +
	"na nb nc nd ne nf ng nh ni nj nk nl nm nn no np nr ns nt nu nv nw nx ny nz " +
	"oa ob oc od oe of og oh oi oj ok ol om on oo op or os ot ou ov ow ox oy oz " +
	"pa pb pc pd pe pf pg ph pi pj pk pl pm pn po pp pq pr ps pt pu pv pw px py pz " +
	"qa qb qc qd qe qh qi ql qm qn qp qq qr qs qt qu qw qx " +
	"ra rb rc rd re rf rg rh ri rk rl rm rn ro rp rq rr rs rt ru rv rw rx ry rz " +
	"sa sb sc sd se sf sg sh si sj sk sl sm sn so sp sq sr ss st su sv sw sx sy sz " +
	"ta tb tc td te tf tg th ti tk tl tm tn to tp tr ts tt tu tv tw tx ty tz " +
	"ua ub uc ud ue uf ug uh ui uj uk ul um un uo up ur us ut uu uv uw ux uy uz " +
	"va vb vc vd ve vf vg vh vi vj vk vl vm vn vo vp vr vs vt vu vv vw vx vy " +
	"wa wb wc wd we wf wg wh wi wj wk wl wm wn wo wp wr ws wt wu ww wx wy " +
	"xa xb xc xd xe xf xi xl xm xn xo xp xr xs xt xx xy xz " +
	"ya yb yc yd ye yg yh yi yk yl ym yn yo yp yr ys yt yu yw yx yy yz " +
	"za zb zc zd ze zf zh zi zk zl zm zn zo zp zs zt zu zw zx zy zz"

// rowID names a row in a request after its text: an id of rowIDs picked by
// the FNV-1a hash of the text, the next free one in the list (linear
// probing) when another row of the request holds it. Ids are letters only,
// so a model renumbering rows (0, 1, 2, ...) writes ids nobody asked
// about instead of another row's. taken keeps ids unique in the request.
// A request has at most 500 rows (rows_per_request); should the list ever
// run out, longer ids (a letter and three base-36 digits) follow.
func rowID(text string, taken map[string]bool) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(text))
	x := h.Sum64()
	n := uint64(len(rowIDs))
	for probe := range n {
		id := rowIDs[(x+probe)%n]
		if !taken[id] {
			taken[id] = true
			return id
		}
	}
	for {
		id := strconv.FormatUint(10*36*36*36+x%(26*36*36*36), 36) // 4 digits, the first a letter
		if !taken[id] {
			taken[id] = true
			return id
		}
		x++
	}
}

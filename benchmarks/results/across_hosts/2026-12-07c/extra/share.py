import json,glob,statistics as st,sys
for pat in sys.argv[1:]:
    per={}
    for f in sorted(glob.glob(pat)):
        d=json.load(open(f))
        by={}
        for r in d['rows']:
            by.setdefault(r['size'],{})[r['label']]=r['ip']['busbw']
        for s,m in by.items():
            ak=[k for k in m if k.startswith('auto')][0]; auto=m[ak]
            rf={k:v for k,v in m.items() if not k.startswith('builtin')}
            bk=max(rf,key=rf.get)
            best=max(m.values())
            per.setdefault(s,[]).append((auto/rf[bk], auto/best, ak[5:], bk, m.get('native',0)/best))
    print(pat)
    for s in sorted(per):
        a=[x[0] for x in per[s]]; b=[x[1] for x in per[s]]; c=[x[4] for x in per[s]]
        print(f"  {s>>10:>6}K  share(rf) {st.median(a):.2f}  share(all) {st.median(b):.2f} native/best {st.median(c):.2f} picks {[x[2] for x in per[s]]} best {[x[3] for x in per[s]]}")

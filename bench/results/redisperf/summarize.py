import json,re,sys
base=sys.argv[1]
for d in ['before-r1','after-r1','before-r2','after-r2','before-r3','after-r3']:
    tot=0; pubs=0; red=None; node=None; probs=[]
    for p in (0,1):
        r=json.load(open(f'{base}/{d}/throughput-p{p}.json'))
        tot+=r['rate']['published_per_s']; pubs+=r['rate']['publish']['published']
        red=r.get('redis',{}).get('cpu_ms_measured'); node=r.get('server',{}).get('cpu_ms_measured')
        probs+=r.get('problems',[]); rtt=r['publish_rtt']; el=r['rate']['publish']['elapsed_s']
    st=open(f'{base}/{d}/throughput.redis.txt').read()
    ev=re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+)",st)
    if not pubs: print(d,'incomplete:',probs); continue
    print(f"{d}: {tot:,.0f}/s acked, {pubs} published in {el:.1f}s, Redis CPU {red*1000/pubs:.1f} us/pub, nodes CPU {node*1000/pubs:.1f} us/pub, evalsha calls {ev.group(1)} ({int(ev.group(2))/pubs:.1f} us/pub), rtt p50 {rtt['p50_us']/1e3:.1f} ms, lost+dup {r['lost']+r['checks']['duplicates']}; problems {probs}")

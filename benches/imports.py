#!/usr/bin/env python3
"""The module picture: which top-level module of src/ imports which (`crate::X`),
the circles (strongly connected components) and the floors. Tests excluded.

    python3 benches/imports.py        (from the repo root)
"""
import re,os,glob,sys
root='src'
mods={}
for path in glob.glob('src/**/*.rs',recursive=True):
    rel=path[4:]
    top=rel.split('/')[0].replace('.rs','')
    if top in ('lib','main'): continue
    if '/tests' in rel or rel.endswith('tests.rs'): continue
    text=open(path).read()
    # strip cfg(test) mod tests { ... } blocks crude: cut from '#[cfg(test)]\nmod tests {' to end
    i=text.find('#[cfg(test)]\nmod tests {')
    if i>=0: text=text[:i]
    deps=set(re.findall(r'crate::([a-z_]+)',text))
    deps.discard(top)
    mods.setdefault(top,set()).update(deps)
# cycles via DFS
def cycles():
    res=[]
    for a in mods:
        for b in mods[a]:
            if b in mods and a in mods.get(b,()):
                res.append(tuple(sorted((a,b))))
    return sorted(set(res))
print("modules:",len(mods))
for m in sorted(mods): print(f"  {m} -> {', '.join(sorted(d for d in mods[m] if d in mods))}")
print("2-cycles:",cycles())
# longer cycles: tarjan SCC
index={};low={};stack=[];on=set();sccs=[];c=[0]
def strong(v):
    index[v]=low[v]=c[0];c[0]+=1;stack.append(v);on.add(v)
    for w in mods.get(v,()):
        if w not in mods: continue
        if w not in index: strong(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],index[w])
    if low[v]==index[v]:
        comp=[]
        while True:
            w=stack.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: sccs.append(comp)
for v in mods:
    if v not in index: strong(v)
print("SCCs (circles):",sccs)
# floors
floor={}
def fl(m,seen=()):
    if m in floor: return floor[m]
    if m in seen: return 0
    ds=[d for d in mods.get(m,()) if d in mods]
    floor[m]=1+max([fl(d,seen+(m,)) for d in ds],default=0)
    return floor[m]
for m in mods: fl(m)
print("floors:",max(floor.values()))
for f in sorted(set(floor.values())): print(f"  {f}: {', '.join(sorted(m for m in floor if floor[m]==f))}")

"""The self-contained HTML page (inline canvas viewer, no network) that `export_html` fills in."""
# ruff: noqa: E501  (minified-style JavaScript inside a string)

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>layerscan</title>
<style>
body{margin:0;background:#0e1117;color:#eef0f4;font:14px system-ui,sans-serif;overflow:hidden}
#row{display:flex;height:calc(100vh - 64px)}
.panel{flex:1;position:relative;border-right:1px solid #2a3140}
canvas{width:100%;height:100%;display:block;cursor:grab}
.head{position:absolute;left:14px;top:10px;pointer-events:none}
.head b{font-size:20px}.dim{color:#8c93a1}
.lens{position:absolute;right:14px;top:10px;text-align:right;pointer-events:none}
.bar{display:inline-block;height:10px;background:#ffc740;vertical-align:middle;margin-left:6px}
.tokens{position:absolute;left:14px;bottom:10px;right:14px;pointer-events:none}
.tok{display:inline-block;background:#333d4f;border-radius:3px;padding:1px 5px;margin:2px}
.tok.diff{outline:2px solid #bf383f}
#ctl{height:64px;display:flex;align-items:center;gap:14px;padding:0 16px;background:#151a22}
#ctl input[type=range]{flex:1}
button{background:#333d4f;color:#eef0f4;border:0;border-radius:4px;padding:6px 12px;cursor:pointer}
#chart{height:44px;width:220px}
</style></head><body>
<div id="row"></div>
<div id="ctl"><button id="play">pause</button><span id="lname"></span>
<input id="slider" type="range" min="0" step="0.01" value="0">
<label><input id="surf" type="checkbox" checked> surface</label>
<select id="mode"><option>token</option><option>slot</option><option>displacement</option></select>
<canvas id="chart"></canvas></div>
<script>
"use strict";
const DATA = /*LAYERSCAN_DATA*/null;
function f32(b64){const s=atob(b64),u=new Uint8Array(s.length);for(let i=0;i<s.length;i++)u[i]=s.charCodeAt(i);return new Float32Array(u.buffer)}
function i32(b64){return new Int32Array(f32(b64).buffer)}
function vis(t){return t.replace(/ /g,"␣").replace(/\n/g,"↵").replace(/\t/g,"⇥")||"∅"}
function ink(hex){const n=parseInt(hex.slice(1),16),l=(0.2126*(n>>16)+0.7152*(n>>8&255)+0.0722*(n&255))/255;return l>0.45?"#101218":"#f4f6f8"}
const P=DATA.panels, NL=P[0].layer_names.length, N=P[0].n_particles;
const TURBO=[[48,18,59],[70,107,227],[40,187,236],[49,242,153],[162,252,60],[237,208,58],[251,128,34],[210,49,5],[122,4,3]];
const PLASMA=[[70,3,159],[114,1,168],[156,23,158],[189,55,134],[216,87,107],[237,121,83],[251,159,58],[253,202,38],[240,249,33]];
function cmap(t,m){t=Math.min(1,Math.max(0,t))*(m.length-1);const i=Math.min(m.length-2,Math.floor(t)),f=t-i,a=m[i],b=m[i+1];
 return `rgb(${a[0]+(b[0]-a[0])*f|0},${a[1]+(b[1]-a[1])*f|0},${a[2]+(b[2]-a[2])*f|0})`}
const panels=P.map((p,k)=>{
 const div=document.createElement("div");div.className="panel";
 div.innerHTML=`<canvas></canvas><div class="head"></div><div class="lens"></div><div class="tokens"></div>`;
 document.getElementById("row").appendChild(div);
 const pos=f32(p.positions), surf=p.surfaces&&p.surfaces.map(s=>({v:f32(s.v),f:i32(s.f)}));
 const disp=p.displacement?f32(p.displacement):null, ptok=p.particle_tokens?i32(p.particle_tokens):null, tcol=p.token_colors||[];
 const first=pos.subarray(0,N*3);let mx=0,my=0,mz=0;for(let i=0;i<N;i++){mx+=first[3*i];my+=first[3*i+1];mz+=first[3*i+2]}
 const slot=new Float32Array(N),proj=[];for(let i=0;i<N;i++)proj.push([first[3*i]-mx/N+0.5*(first[3*i+1]-my/N),i]);
 proj.sort((a,b)=>a[0]-b[0]);proj.forEach((e,r)=>slot[e[1]]=r/(N-1));
 div.querySelector(".tokens").innerHTML=p.tokens.map((t,i)=>`<span class="tok${(DATA.differing_tokens||[]).includes(i)?" diff":""}" style="background:${tcol[i]||"#333d4f"};color:${tcol[i]?ink(tcol[i]):"#eef0f4"}">${esc(vis(t))}</span>`).join("");
 return {p,div,canvas:div.querySelector("canvas"),pos,surf,disp,slot,ptok,tcol}});
function esc(s){return s.replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c]))}
let layer=0,playing=true,az=0.6,el=0.38,zoom=1,last=performance.now();
const slider=document.getElementById("slider");slider.max=NL-1;
const mode=document.getElementById("mode");mode.value=P[0].particle_tokens?"token":"slot";
document.getElementById("play").onclick=e=>{playing=!playing;e.target.textContent=playing?"pause":"play";if(playing&&layer>=NL-1)layer=0};
slider.oninput=()=>{layer=+slider.value;playing=false;document.getElementById("play").textContent="play"};
let drag=null;
for(const q of panels){q.canvas.onmousedown=e=>drag=[e.clientX,e.clientY];
 q.canvas.onwheel=e=>{zoom*=Math.exp(-e.deltaY*0.001);e.preventDefault()}}
window.onmouseup=()=>drag=null;
window.onmousemove=e=>{if(!drag)return;az-=(e.clientX-drag[0])*0.01;el=Math.max(-1.5,Math.min(1.5,el+(e.clientY-drag[1])*0.01));drag=[e.clientX,e.clientY]};
window.onkeydown=e=>{if(e.key===" "){document.getElementById("play").click();e.preventDefault()}
 if(e.key==="]")layer=Math.min(NL-1,Math.floor(layer+1e-6)+1);if(e.key==="[")layer=Math.max(0,Math.ceil(layer-1e-6)-1)};
function ease(t){return t*t*(3-2*t)}
function project(x,y,z,w,h){const ca=Math.cos(az),sa=Math.sin(az),ce=Math.cos(el),se=Math.sin(el);
 const X=ca*x-sa*y,Y=sa*x+ca*y,Z=z;const depth=ce*Y+se*Z,up=ce*Z-se*Y;const d=3.2,s=Math.min(w,h)*0.55*zoom/(d-depth);
 return [w/2+X*s,h/2-up*s,depth]}
function draw(q){const c=q.canvas,dpr=window.devicePixelRatio||1,w=c.clientWidth*dpr,h=c.clientHeight*dpr;
 if(c.width!==w||c.height!==h){c.width=w;c.height=h}
 const g=c.getContext("2d");g.fillStyle="#0e1117";g.fillRect(0,0,w,h);
 const lo=Math.floor(layer),hi=Math.min(NL-1,lo+1),t=ease(layer-lo),near=t<0.5?lo:hi;
 if(q.surf&&document.getElementById("surf").checked){const s=q.surf[near];g.fillStyle="rgba(95,179,217,0.07)";
  for(let k=0;k<s.f.length;k+=3){g.beginPath();for(let j=0;j<3;j++){const v=s.f[k+j]*3,r=project(s.v[v],s.v[v+1],s.v[v+2],w,h);j?g.lineTo(r[0],r[1]):g.moveTo(r[0],r[1])}g.fill()}}
 const A=q.pos.subarray(lo*N*3,(lo+1)*N*3),B=q.pos.subarray(hi*N*3,(hi+1)*N*3),pts=[];
 for(let i=0;i<N;i++){const x=A[3*i]+(B[3*i]-A[3*i])*t,y=A[3*i+1]+(B[3*i+1]-A[3*i+1])*t,z=A[3*i+2]+(B[3*i+2]-A[3*i+2])*t;pts.push([...project(x,y,z,w,h),i])}
 pts.sort((a,b)=>a[2]-b[2]);const r=Math.max(1.5,2.6*dpr*zoom);
 for(const [x,y,,i] of pts){g.fillStyle=mode.value==="token"&&q.ptok?q.tcol[q.ptok[near*N+i]]:mode.value==="displacement"&&q.disp?cmap(q.disp[near*N+i],PLASMA):cmap(q.slot[i],TURBO);g.fillRect(x-r,y-r,2*r,2*r)}
 const m=q.p.metrics;q.div.querySelector(".head").innerHTML=`<b>layer ${near} / ${NL-1}</b><br><span class="dim">${esc(q.p.layer_names[near])} · ${esc(DATA.model_id)}<br>R² ${m.reconstruction_r2[near].toFixed(2)} · token trust ${m.token_trust[near].toFixed(2)} (PCA-3 ${m.baseline_trust[near].toFixed(2)}) · distance corr. ${m.distance_correlation[near].toFixed(2)} (PCA-3 ${m.baseline_correlation[near].toFixed(2)})</span>`;
 if(q.p.lens)q.div.querySelector(".lens").innerHTML=`<span class="dim">logit lens after “${esc(vis(q.p.tokens[q.p.tokens.length-1]))}”</span><br>`+q.p.lens[near].map(([tok,p])=>`${esc(vis(tok))} ${(100*p).toFixed(0)}%<span class="bar" style="width:${(p*110)|0}px"></span>`).join("<br>");
 document.getElementById("lname").textContent=q.p.layer_names[near]}
function chart(){const c=document.getElementById("chart"),d=DATA.divergence;if(!d){c.style.display="none";return}
 const w=c.width=c.clientWidth,h=c.height=c.clientHeight,g=c.getContext("2d"),lo=Math.min(...d),hi=Math.max(...d)||1;
 g.strokeStyle="#eef0f4";g.beginPath();d.forEach((v,i)=>{const x=i/(d.length-1)*w,y=h-2-(v-lo)/(hi-lo||1)*(h-4);i?g.lineTo(x,y):g.moveTo(x,y)});g.stroke();
 g.strokeStyle="#ffc740";g.beginPath();g.moveTo(layer/(NL-1)*w,0);g.lineTo(layer/(NL-1)*w,h);g.stroke()}
function frame(now){const dt=(now-last)/1000;last=now;if(playing){layer+=dt*3;if(layer>=NL-1){layer=NL-1;playing=false;document.getElementById("play").textContent="play"}}
 slider.value=layer;panels.forEach(draw);chart();requestAnimationFrame(frame)}
requestAnimationFrame(frame);
</script></body></html>
"""

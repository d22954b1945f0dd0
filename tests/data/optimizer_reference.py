# Independent reference for tests/optimizer.test.cpp: torch.optim update rules written out in
# plain Python floats (double precision). Parameters: V (weights, decayed) = [0.5, -1.0], b (bias,
# not decayed) = [0.25]; three steps with the gradients below.
import math
p0 = [0.5, -1.0, 0.25]
decays = [True, True, False]
grads = [[0.1, -0.2, 0.3], [-0.05, 0.4, 0.1], [0.2, 0.0, -0.3]]

def sgd(lr, mu=0.0, nesterov=False, wd=0.0):
    p = list(p0); buf = [0.0]*3; out = []
    for g in grads:
        for i in range(3):
            gi = g[i] + (wd*p[i] if decays[i] else 0.0)
            if mu != 0.0:
                buf[i] = mu*buf[i] + gi
                d = gi + mu*buf[i] if nesterov else buf[i]
            else:
                d = gi
            p[i] -= lr*d
        out.append(list(p))
    return out

def adam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    p = list(p0); m = [0.0]*3; v = [0.0]*3; out = []
    for t, g in enumerate(grads, start=1):
        for i in range(3):
            gi = g[i]
            if decays[i]:
                if decoupled: p[i] *= 1 - lr*wd
                else: gi += wd*p[i]
            m[i] = b1*m[i] + (1-b1)*gi
            v[i] = b2*v[i] + (1-b2)*gi*gi
            mhat = m[i]/(1-b1**t); vhat = v[i]/(1-b2**t)
            p[i] -= lr*mhat/(math.sqrt(vhat)+eps)
        out.append(list(p))
    return out

for name, r in [("sgd plain lr=0.1", sgd(0.1)),
                ("sgd momentum lr=0.1 mu=0.9 wd=0.01", sgd(0.1, 0.9, False, 0.01)),
                ("sgd nesterov lr=0.1 mu=0.9", sgd(0.1, 0.9, True)),
                ("adam lr=0.01 wd=0.1", adam(0.01, wd=0.1)),
                ("adamw lr=0.01 wd=0.1", adam(0.01, wd=0.1, decoupled=True))]:
    print(name)
    for row in r: print("  {" + ", ".join(repr(x) for x in row) + "},")

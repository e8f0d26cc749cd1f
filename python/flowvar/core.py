"""core.py: the closed-form engine on numpy arrays, one function per flowvar command (field,
transport, w2 and its OT map, variance, crossover, check) over one Problem, as the CLI's flags
describe it. Every call goes through libflowvar.so; nothing is recomputed here."""

import contextlib
from ctypes import byref, c_double, c_int, c_size_t

import numpy as np

from . import _arrays as A
from . import _lib
from ._lib import dptr, ensure, lib
from .errors import Error, InputError


class Problem:
    """A transport problem between Gaussians: source N(source_mean, source_cov) (default N(0, I)),
    target N(target_mean, target_cov) (defaults 0 and I; give at least one: it sets d), the coupling
    "ot" | "rotation" | "independent" (rotation: `angle` in degrees, 2x2 blocks in d > 2, or any
    orthogonal `rotation` matrix), interpolant noise `sigma` with schedule "constant" | "bridge", and
    `deriv_term` (add f'(t) Z to the regression target). Covariances are d x d or d*d numbers
    row-major. The C library validates it (InputError naming the CLI flag, e.g. --target-cov).
    A Problem is immutable (its arrays are read-only)."""

    def __init__(self, target_mean=None, target_cov=None, source_mean=None, source_cov=None, coupling="ot",
                 angle=None, rotation=None, sigma=0.0, schedule="constant", deriv_term=False):
        d = self._dimension(target_mean, target_cov)
        eye = np.eye(d)
        self.target_mean = self._frozen(np.zeros(d) if target_mean is None else A.vector(target_mean, "target_mean", d))
        self.target_cov = self._frozen(eye if target_cov is None else A.matrix(target_cov, "target_cov", d))
        self.source_mean = self._frozen(np.zeros(d) if source_mean is None else A.vector(source_mean, "source_mean", d))
        self.source_cov = self._frozen(eye if source_cov is None else A.matrix(source_cov, "source_cov", d))
        self.coupling = coupling
        self.sigma = A.number(sigma, "sigma")
        self.schedule = schedule
        if not isinstance(deriv_term, (bool, np.bool_)):
            raise TypeError(f"deriv_term: expected a bool, got {type(deriv_term).__name__}")
        self.deriv_term = bool(deriv_term)
        if angle is not None and rotation is not None:
            raise InputError("give angle or rotation, not both")
        self.angle = None if angle is None else A.number(angle, "angle")
        self.rotation = None
        if rotation is not None:
            self.rotation = self._frozen(A.matrix(rotation, "rotation", d))
        elif angle is not None:
            R = np.empty((d, d))
            lib.fv_rotation_blocks(d, self.angle, dptr(R))
            self.rotation = self._frozen(R)
        self._c = _lib.Problem(d, dptr(self.source_mean), dptr(self.source_cov), dptr(self.target_mean),
                               dptr(self.target_cov), A.choice(coupling, "coupling", _lib.COUPLINGS),
                               dptr(self.rotation), self.sigma, A.choice(schedule, "schedule", _lib.SCHEDULES),
                               int(self.deriv_term))
        ensure(lib.fv_problem_validate(byref(self._c)))
        self._sealed = True

    def __setattr__(self, name, value):
        # the C struct holds copies of the scalars and pointers into the arrays: changing an attribute
        # afterwards would leave it describing another problem
        if getattr(self, "_sealed", False):
            raise AttributeError(f"flowvar.Problem is immutable: make a new one to change {name}")
        super().__setattr__(name, value)

    @staticmethod
    def _dimension(target_mean, target_cov):
        if target_mean is not None:
            d = A.vector(target_mean, "target_mean").shape[0]
            if d == 0:
                raise InputError("target_mean is empty")
            return d
        if target_cov is None:
            raise InputError("describe the target with target_mean and/or target_cov")
        S = A.real_array(target_cov, "target_cov")
        d = int(round(np.sqrt(S.size)))
        if S.size == 0 or d * d != S.size:
            raise InputError(f"target_cov has {S.size} numbers, which is not d*d for any d")
        return d

    @staticmethod
    def _frozen(a):
        # the C struct points into these arrays: they must not change (or move) under it
        a = np.array(a, dtype=np.float64, order="C")
        a.flags.writeable = False
        return a

    @property
    def d(self):
        return self._c.d

    def __repr__(self):
        extra = f", angle={self.angle:g}" if self.angle is not None else ""
        return (f"flowvar.Problem(d={self.d}, coupling={self.coupling!r}{extra}, sigma={self.sigma:g}, "
                f"schedule={self.schedule!r})")


def _problem(p):
    if not isinstance(p, Problem):
        raise TypeError(f"problem: expected a flowvar.Problem, got {type(p).__name__}")
    return p


@contextlib.contextmanager
def _field(problem, kind, cond_max=None):
    """A built fv_field of the problem, freed on exit; cond_max as the CLI's --cond-max."""
    f = _lib.Field()
    ensure(lib.fv_field_build(byref(f), byref(_problem(problem)._c), A.choice(kind, "field", _lib.FIELDS)))
    try:
        if cond_max is not None:
            f.cond_max = A.number(cond_max, "cond_max")
            if f.cond_max <= 0:
                raise InputError(f"cond_max must be > 0, got {f.cond_max:g}")
        yield f
    finally:
        lib.fv_field_free(byref(f))


@contextlib.contextmanager
def _work(d, n):
    w = _lib.FieldWork()
    ensure(lib.fv_field_work_alloc(byref(w), d, n))
    try:
        yield w
    finally:
        lib.fv_field_work_free(byref(w))


def field(problem, kind, x, t, cond_max=None):
    """v(x, t) of the closed-form field `kind` ("ot", "rotation", "markov") at points x ((n, d) or
    (d,)) and time t: a float gives an array shaped like x, an array of nt times gives (nt, n, d).
    SingularError (naming t and the condition number) where A(t) is singular or its condition number
    exceeds cond_max (default 1e12). As `flowvar field`."""
    d = _problem(problem).d
    X, single = A.points(x, "x", d)
    ts, scalar = A.times(t)
    n = X.shape[0]
    out = np.empty((ts.size, n, d))
    with _field(problem, kind, cond_max) as f, _work(d, n) as w:
        ensure(lib.fv_field_eval_times(byref(f), ts.size, dptr(ts), n, dptr(X), dptr(out), byref(w)))
    if single:
        out = out[:, 0, :]
    return out[0] if scalar else out


def _starting_points(problem, x, n, seed):
    """The points to transport: x, or n draws of the source from stream (seed, 0) as the CLI's --n."""
    d = problem.d
    if (x is None) == (n is None):
        raise InputError("give x or n, not both" if x is not None else "give the starting points x or a count n")
    if x is not None:
        X, single = A.points(x, "x", d)
        return X.copy(), single
    n = A.count(n, "n", 1)
    X = np.empty((n, d))
    rng = lib.fv_rng_make(A.count(seed, "seed", 0), 0)
    ensure(lib.fv_gaussian_sample(d, dptr(problem.source_mean), dptr(problem.source_cov), n, byref(rng), dptr(X)))
    return X, False


def transport(problem, field="ot", x=None, n=None, seed=0, solver="rk4", steps=100, rtol=1e-8, atol=1e-8,
              cond_max=None, with_map=False):
    """Integrate dx/dt = v(x, t) of the closed-form `field` from t = 0 to 1 and return the end points.
    Starting points: x ((n, d) or (d,)), or n samples of the source drawn with `seed` (the CLI's --n).
    solver "euler" | "rk4" | "rk45" with `steps` (rk45: initial step 1/steps, tolerances rtol, atol).
    with_map: return (end points, T(x0)), T the coupling map in closed form. As `flowvar transport`."""
    _problem(problem)
    X, single = _starting_points(problem, x, n, seed)
    o = lib.fv_ode_defaults()
    o.solver = A.choice(solver, "solver", _lib.SOLVERS)
    o.steps = A.count(steps, "steps", 1)
    o.rtol, o.atol = A.number(rtol, "rtol"), A.number(atol, "atol")
    if o.rtol <= 0 or o.atol < 0:
        raise InputError("rtol must be > 0 and atol >= 0")
    T = np.empty_like(X) if with_map else None
    with _field(problem, field, cond_max) as f:
        if with_map:
            with _work(problem.d, X.shape[0]) as w:
                ensure(lib.fv_field_map(byref(f), X.shape[0], dptr(X), dptr(T), byref(w)))
        ensure(lib.fv_field_transport(byref(f), X.shape[0], dptr(X), byref(o), None))
    if single:
        X = X[0]
        T = None if T is None else T[0]
    return (X, T) if with_map else X


def ot_map(problem):
    """The matrix G of the OT map T(x) = m1 + G (x - m0) from the source to the target (symmetric
    positive definite). As `flowvar w2 --map-out`."""
    p = _problem(problem)
    G = np.empty((p.d, p.d))
    ensure(lib.fv_ot_map_matrix(p.d, dptr(p.source_cov), dptr(p.target_cov), dptr(G)))
    return G


def w2(problem, squared=False):
    """The 2-Wasserstein distance between the source and the target (its square with squared=True).
    As `flowvar w2`."""
    p = _problem(problem)
    w2sq = c_double()
    ensure(lib.fv_w2_squared(p.d, dptr(p.source_mean), dptr(p.source_cov), dptr(p.target_mean),
                            dptr(p.target_cov), byref(w2sq)))
    return w2sq.value if squared else float(np.sqrt(max(w2sq.value, 0.0)))


def singular_times(problem, field="rotation"):
    """Times in [0, 1] where the pair field's A(t) = (1-t) I + t K is singular, ascending (t = 1/(1 -
    lambda) for each real eigenvalue lambda <= 0 of K); empty for the OT and Markov fields."""
    d = _problem(problem).d
    out, count = np.empty(d), c_size_t()
    with _field(problem, field) as f:
        ensure(lib.fv_field_singular_times(byref(f), dptr(out), byref(count)))
    return out[:count.value].copy()


def _vfield(problem, field, theta, Theta):
    """The fv_vfield of `field` ("ot", "rotation", "markov", "custom" with theta and Theta), with the
    arrays it points to (the caller keeps them alive)."""
    kind = A.choice(field, "field", _lib.VFIELDS)
    d = problem.d
    if kind != _lib.VFIELDS["custom"]:
        if theta is not None or Theta is not None:
            raise InputError("theta and Theta go with field='custom'")
        return _lib.VField(kind, None, None), ()
    if theta is None or Theta is None:
        raise InputError("field='custom' needs theta and Theta")
    th, Th = A.vector(theta, "theta", d), A.matrix(Theta, "Theta", d)
    return _lib.VField(kind, dptr(th), dptr(Th)), (th, Th)


def _variance_times(t, t_grid, integrated):
    """Exactly one of t (a time or an array of times), t_grid (N times (k + 0.5)/N), integrated."""
    if (t is not None) + (t_grid is not None) + bool(integrated) != 1:
        raise InputError("give exactly one of t, t_grid, integrated=True")
    if integrated:
        return None
    if t is not None:
        return A.times(t)[0]
    N = A.count(t_grid, "t_grid", 1)
    return (np.arange(N) + 0.5) / N


def variance(problem, field="ot", t=None, t_grid=None, integrated=False, batch=1, mc=0, theta=None, Theta=None,
             epsrel=1e-10, seed=0):
    """The exact variance (trace of the covariance) of the per-sample CFM gradient, by block, at times
    t, on a grid of t_grid times, or integrated over t ~ U(0,1); minibatch `batch` divides every
    variance; mc > 0 adds a Monte-Carlo estimate from mc samples (stream (seed, row)) with its standard
    error. Returns the columns of `flowvar variance` as a dict of arrays: t, var_theta, var_Theta,
    var_total [, mc_total, mc_se]; with integrated=True one row whose t is the string "integrated"."""
    p = _problem(problem)
    ts = _variance_times(t, t_grid, integrated)
    B = A.count(batch, "batch", 1)
    mc = A.count(mc, "mc", 0)
    if 0 < mc < 4:
        raise InputError("mc needs at least 4 samples")
    epsrel = A.number(epsrel, "epsrel")
    if epsrel <= 0:
        raise InputError("epsrel must be > 0")
    seed = A.count(seed, "seed", 0)
    vf, _pointed_to = _vfield(p, field, theta, Theta)  # the arrays vf points to, alive until the return
    ensure(lib.fv_variance_check(byref(p._c), byref(vf)))
    rows = [-1.0] if ts is None else ts
    names = ["var_theta", "var_Theta", "var_total"] + (["mc_total", "mc_se"] if mc else [])
    cols = {name: np.empty(len(rows)) for name in names}
    for r, tr in enumerate(rows):
        v = _lib.Var()
        if tr < 0:
            ensure(lib.fv_variance_integrated(byref(p._c), byref(vf), epsrel, byref(v), None))
        else:
            ensure(lib.fv_variance_at(byref(p._c), byref(vf), tr, byref(v), None, None))
        lib.fv_var_minibatch(byref(v), B)
        cols["var_theta"][r], cols["var_Theta"][r], cols["var_total"][r] = v.var_theta, v.var_Theta, v.var_total
        if mc:
            m = _lib.MC()
            ensure(lib.fv_variance_mc(byref(p._c), byref(vf), tr, mc, seed, r, byref(m)))
            cols["mc_total"][r], cols["mc_se"][r] = m.var_total / B, m.se_total / B
    return {"t": np.array(["integrated"]) if ts is None else np.array(ts), **cols}


def crossover(problem, angles, sigma_max=2.0, scan=40, xtol=1e-8):
    """The critical noise sigma*(angle) per rotation angle (degrees) on the problem's rotational
    coupling (the problem's own coupling and sigma are ignored; its schedule is used). Returns a dict
    of arrays: angle, sigma_star (NaN unless state is "found"), state ("found", "none": no crossing in
    (0, sigma_max], "diverges": the rotational field is singular at some t) and message (why it
    diverges, else ""). As `flowvar crossover`."""
    p = _problem(problem)
    angles = A.vector(angles, "angles")
    smax, xtol = A.number(sigma_max, "sigma_max"), A.number(xtol, "xtol")
    if smax <= 0 or xtol <= 0:
        raise InputError("sigma_max and xtol must be > 0")
    scan = A.count(scan, "scan", 1)
    c = _lib.Problem.from_buffer_copy(p._c)
    R = np.empty((p.d, p.d))
    c.R, c.coupling = dptr(R), _lib.COUPLINGS["rotation"]
    sigma, state, message = np.full(angles.size, np.nan), [], []
    for i, deg in enumerate(angles):
        lib.fv_rotation_blocks(p.d, deg, dptr(R))
        s, found = c_double(), c_int()
        st = lib.fv_crossover_sigma(byref(c), smax, scan, xtol, 1e-10, byref(s), byref(found))
        if st == _lib.errors.FV_EDIVERGE:
            state.append("diverges")
            message.append(_lib.last_error())
            continue
        ensure(st)
        state.append("found" if found.value else "none")
        message.append("")
        if found.value:
            sigma[i] = s.value
    return {"angle": angles, "sigma_star": sigma, "state": np.array(state), "message": np.array(message)}


def check():
    """Run the claims checker of `flowvar check`: a list of rows, each a dict with claim, measured,
    value, cmp ("<" or ">"), threshold and passed (value cmp threshold)."""
    rows = []

    def report(c, _ctx):
        c = c.contents
        rows.append({"claim": c.name.decode("utf-8", "replace"), "measured": c.measured.decode("utf-8", "replace"),
                     "value": c.value, "cmp": c.cmp.decode(), "threshold": c.threshold, "passed": bool(c.pass_)})

    npass, nfail = c_size_t(), c_size_t()
    lib.fv_claims_run(_lib.CLAIM_REPORT(report), None, byref(npass), byref(nfail))
    # ctypes only prints an exception raised inside a callback: a lost row shows in the count
    if len(rows) != npass.value + nfail.value:
        raise Error(f"check: {npass.value + nfail.value} claims ran but {len(rows)} rows arrived")
    return rows

/* conv_dnnl.c: convolution plans on oneDNN's C API (see conv_dnnl.h). oneDNN chooses each
 * primitive's layouts (format "any": its blocked nChw16c-style layouts, measured 2-3x faster on the
 * U-Net's shapes than running it on plain NCHW, reorders included); each primitive argument is a memory
 * object over flowvar's buffer (its pointer set at every call) and, where the primitive's layout
 * differs, one over the caller's scratch in that layout plus the reorder between the two. */
#include "nn/conv_dnnl.h"

#include "core/error.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>

/* One argument of one primitive. */
typedef struct {
    dnnl_memory_t user;       /* over flowvar's buffer */
    dnnl_memory_t inner;      /* the primitive's own layout (in the bound scratch), NULL when it reads or
                                 writes `user` */
    size_t bytes;             /* inner's size */
    void *bound;              /* inner's place in the scratch */
    dnnl_primitive_t reorder; /* user -> inner for an input, inner -> user for an output */
} conv_arg;

enum { A_SRC, A_WEI, A_BIAS, A_DST, NARGS };

typedef struct {
    dnnl_primitive_t prim;
    conv_arg arg[NARGS];
    int tag[NARGS]; /* oneDNN's DNNL_ARG_* of each slot, 0 where unused */
} conv_prim;

struct fv_dnnl_conv {
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    conv_prim fwd, bwd_data, bwd_weights;
    int dout_shared; /* both backward primitives read dout in one blocked layout: converted once */
    int src_keepable; /* the forward and backward-weights primitives read the input in one blocked layout */
};

static int dnnl_fail(dnnl_status_t s, const char *what)
{
    return fv_error(FV_ENUMERIC, "oneDNN: %s failed (dnnl_status_t %d)", what, (int)s);
}

#define TRY(call, what)                                                                                          \
    do {                                                                                                         \
        dnnl_status_t s_ = (call);                                                                               \
        if (s_ != dnnl_success)                                                                                  \
            return dnnl_fail(s_, what);                                                                          \
    } while (0)

/* The four user descriptors: src B x cin x h x w, weights cout x cin x k x k, bias cout, dst. */
static void user_mds(const fv_conv2d_shape *s, size_t B, dnnl_memory_desc_t md[NARGS], dnnl_format_tag_t any)
{
    dnnl_dims_t src = {(dnnl_dim_t)B, (dnnl_dim_t)s->cin, (dnnl_dim_t)s->h, (dnnl_dim_t)s->w};
    dnnl_dims_t wei = {(dnnl_dim_t)s->cout, (dnnl_dim_t)s->cin, (dnnl_dim_t)s->k, (dnnl_dim_t)s->k};
    dnnl_dims_t bias = {(dnnl_dim_t)s->cout};
    dnnl_dims_t dst = {(dnnl_dim_t)B, (dnnl_dim_t)s->cout, (dnnl_dim_t)fv_conv2d_out_h(s),
                       (dnnl_dim_t)fv_conv2d_out_w(s)};
    dnnl_memory_desc_init_by_tag(&md[A_SRC], 4, src, dnnl_f32, any ? any : dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&md[A_WEI], 4, wei, dnnl_f32, any ? any : dnnl_oihw);
    dnnl_memory_desc_init_by_tag(&md[A_BIAS], 1, bias, dnnl_f32, dnnl_a);
    dnnl_memory_desc_init_by_tag(&md[A_DST], 4, dst, dnnl_f32, any ? any : dnnl_nchw);
}

/* Slot i of p over the layout the primitive chose (pd's query q); output slots get their reorder back,
 * added onto the user's buffer when add is set (forcing an inner buffer even for the same layout). */
static int arg_init(conv_prim *p, int i, dnnl_engine_t eng, const dnnl_memory_desc_t *user_md,
                    const_dnnl_primitive_desc_t pd, dnnl_query_t q, int output, int add)
{
    conv_arg *a = &p->arg[i];
    /* The bias is the primitive's second weights tensor. */
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, q, i == A_BIAS);
    TRY(dnnl_memory_create(&a->user, user_md, eng, DNNL_MEMORY_NONE), "memory_create");
    if (dnnl_memory_desc_equal(md, user_md) && !add)
        return FV_OK;
    TRY(dnnl_memory_create(&a->inner, md, eng, DNNL_MEMORY_NONE), "memory_create (inner layout)");
    a->bytes = (dnnl_memory_desc_get_size(md) + 63) / 64 * 64; /* keep every slot 64-byte aligned */
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (add) {
        TRY(dnnl_primitive_attr_create(&attr), "primitive_attr_create");
        TRY(dnnl_post_ops_create(&po), "post_ops_create");
        TRY(dnnl_post_ops_append_sum(po, 1.0f), "post_ops_append_sum");
        TRY(dnnl_primitive_attr_set_post_ops(attr, po), "primitive_attr_set_post_ops");
    }
    dnnl_primitive_desc_t rpd;
    dnnl_status_t s = output ? dnnl_reorder_primitive_desc_create(&rpd, md, eng, user_md, eng, attr)
                             : dnnl_reorder_primitive_desc_create(&rpd, user_md, eng, md, eng, attr);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    TRY(s, "reorder_primitive_desc_create");
    s = dnnl_primitive_create(&a->reorder, rpd);
    dnnl_primitive_desc_destroy(rpd);
    TRY(s, "primitive_create (reorder)");
    return FV_OK;
}

static int prim_create(conv_prim *p, const_dnnl_primitive_desc_t pd)
{
    TRY(dnnl_primitive_create(&p->prim, pd), "primitive_create (convolution)");
    return FV_OK;
}

static void prim_free(conv_prim *p)
{
    dnnl_primitive_destroy(p->prim);
    for (int i = 0; i < NARGS; i++) {
        dnnl_memory_destroy(p->arg[i].user);
        dnnl_memory_destroy(p->arg[i].inner);
        dnnl_primitive_destroy(p->arg[i].reorder);
    }
}

void fv_dnnl_conv_free(fv_dnnl_conv *c)
{
    if (!c)
        return;
    prim_free(&c->fwd);
    prim_free(&c->bwd_data);
    prim_free(&c->bwd_weights);
    dnnl_stream_destroy(c->strm);
    dnnl_engine_destroy(c->eng);
    free(c);
}

static int create(fv_dnnl_conv *c, const fv_conv2d_shape *s, size_t B, int dinp_add)
{
    dnnl_memory_desc_t user[NARGS], want[NARGS];
    user_mds(s, B, user, dnnl_format_tag_undef);
    user_mds(s, B, want, dnnl_format_tag_any);
    dnnl_dims_t st = {(dnnl_dim_t)s->stride, (dnnl_dim_t)s->stride}, pad = {(dnnl_dim_t)s->pad, (dnnl_dim_t)s->pad};
    TRY(dnnl_engine_create(&c->eng, dnnl_cpu, 0), "engine_create");
    TRY(dnnl_stream_create(&c->strm, c->eng, dnnl_stream_default_flags), "stream_create");

    dnnl_convolution_desc_t d;
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    TRY(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, dnnl_convolution_direct, &want[A_SRC],
                                           &want[A_WEI], &want[A_BIAS], &want[A_DST], st, pad, pad),
        "convolution_forward_desc_init");
    TRY(dnnl_primitive_desc_create(&fpd, &d, NULL, c->eng, NULL), "primitive_desc_create (forward)");
    conv_prim *f = &c->fwd;
    int tags[NARGS] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    dnnl_query_t qs[NARGS] = {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_weights_md, dnnl_query_dst_md};
    int st_ = prim_create(f, fpd);
    for (int i = 0; i < NARGS && !st_; i++) {
        f->tag[i] = tags[i];
        st_ = arg_init(f, i, c->eng, &user[i], fpd, qs[i], i == A_DST, 0);
    }
    if (st_)
        goto out;

    conv_prim *bd = &c->bwd_data;
    if (dnnl_convolution_backward_data_desc_init(&d, dnnl_convolution_direct, &want[A_SRC], &want[A_WEI],
                                                 &want[A_DST], st, pad, pad) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &d, NULL, c->eng, fpd) != dnnl_success) {
        st_ = fv_error(FV_ENUMERIC, "oneDNN: no backward-data convolution for this shape");
        goto out;
    }
    int btags[NARGS] = {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, 0, DNNL_ARG_DIFF_DST};
    dnnl_query_t bq[NARGS] = {dnnl_query_diff_src_md, dnnl_query_weights_md, dnnl_query_undef, dnnl_query_diff_dst_md};
    if (!(st_ = prim_create(bd, pd)))
        for (int i = 0; i < NARGS && !st_; i++)
            if ((bd->tag[i] = btags[i]))
                st_ = arg_init(bd, i, c->eng, &user[i], pd, bq[i], i == A_SRC, i == A_SRC && dinp_add);
    dnnl_primitive_desc_destroy(pd);
    pd = NULL;
    if (st_)
        goto out;

    conv_prim *bw = &c->bwd_weights;
    if (dnnl_convolution_backward_weights_desc_init(&d, dnnl_convolution_direct, &want[A_SRC], &want[A_WEI],
                                                    &want[A_BIAS], &want[A_DST], st, pad, pad) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &d, NULL, c->eng, fpd) != dnnl_success) {
        st_ = fv_error(FV_ENUMERIC, "oneDNN: no backward-weights convolution for this shape");
        goto out;
    }
    int wtags[NARGS] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS, DNNL_ARG_DIFF_DST};
    dnnl_query_t wq[NARGS] = {dnnl_query_src_md, dnnl_query_diff_weights_md, dnnl_query_diff_weights_md,
                              dnnl_query_diff_dst_md};
    if (!(st_ = prim_create(bw, pd)))
        for (int i = 0; i < NARGS && !st_; i++) {
            bw->tag[i] = wtags[i];
            st_ = arg_init(bw, i, c->eng, &user[i], pd, wq[i], i == A_WEI || i == A_BIAS, 0);
        }
    const dnnl_memory_desc_t *wmd, *dmd;
    conv_arg *wd = &bw->arg[A_DST], *dd = &bd->arg[A_DST];
    c->dout_shared = !st_ && wd->inner && dd->inner && !dnnl_memory_get_memory_desc(wd->inner, &wmd) &&
                     !dnnl_memory_get_memory_desc(dd->inner, &dmd) && dnnl_memory_desc_equal(wmd, dmd);
    const dnnl_memory_desc_t *fsmd, *wsmd;
    conv_arg *fs = &f->arg[A_SRC], *ws = &bw->arg[A_SRC];
    c->src_keepable = !st_ && fs->inner && ws->inner && !dnnl_memory_get_memory_desc(fs->inner, &fsmd) &&
                      !dnnl_memory_get_memory_desc(ws->inner, &wsmd) && dnnl_memory_desc_equal(fsmd, wsmd);
out:
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_desc_destroy(fpd);
    return st_;
}

int fv_dnnl_conv_create(fv_dnnl_conv **plan, const fv_conv2d_shape *s, size_t B, int dinp_add)
{
    *plan = calloc(1, sizeof **plan);
    if (!*plan)
        return fv_error(FV_ENOMEM, "oneDNN: cannot allocate a convolution plan");
    int st = create(*plan, s, B, dinp_add);
    if (st) {
        fv_dnnl_conv_free(*plan);
        *plan = NULL;
    }
    return st;
}

/* Bytes of the inner buffers p uses at once. */
static size_t prim_scratch(const conv_prim *p)
{
    size_t n = 0;
    for (int i = 0; i < NARGS; i++)
        n += p->arg[i].inner ? p->arg[i].bytes : 0;
    return n;
}

size_t fv_dnnl_conv_kept_size(const fv_dnnl_conv *c)
{
    return c->src_keepable ? c->fwd.arg[A_SRC].bytes / sizeof(float) : 0;
}

size_t fv_dnnl_conv_scratch_size(const fv_dnnl_conv *c)
{
    size_t f = prim_scratch(&c->fwd), d = prim_scratch(&c->bwd_data), w = prim_scratch(&c->bwd_weights);
    size_t m = f > d ? f : d;
    return (m > w ? m : w) / sizeof(float);
}

/* The inner buffers one after another from the scratch's start, dst first: the two backward primitives'
 * blocked dout then lie in the same place, where the second finds what the first converted. */
static void prim_bind(conv_prim *p, float *scratch)
{
    static const int order[NARGS] = {A_DST, A_SRC, A_WEI, A_BIAS};
    char *at = (char *)scratch;
    for (int k = 0; k < NARGS; k++)
        if (p->arg[order[k]].inner) {
            p->arg[order[k]].bound = at;
            dnnl_memory_set_data_handle(p->arg[order[k]].inner, at);
            at += p->arg[order[k]].bytes;
        }
}

void fv_dnnl_conv_bind(fv_dnnl_conv *c, float *scratch)
{
    prim_bind(&c->fwd, scratch);
    prim_bind(&c->bwd_data, scratch);
    prim_bind(&c->bwd_weights, scratch);
}

/* Run p on the given buffers (NULL: slot unused), through its reorders; is_out[i] marks an output, -1
 * an input already in its inner buffer. */
static void run(dnnl_stream_t strm, conv_prim *p, void *const buf[NARGS], const int is_out[NARGS])
{
    dnnl_exec_arg_t args[NARGS];
    int n = 0;
    for (int i = 0; i < NARGS; i++) {
        conv_arg *a = &p->arg[i];
        if (!p->tag[i] || !a->user)
            continue;
        dnnl_memory_set_data_handle(a->user, buf[i]);
        if (a->reorder && is_out[i] == 0) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->user}, {DNNL_ARG_TO, a->inner}};
            dnnl_primitive_execute(a->reorder, strm, 2, r);
        }
        args[n++] = (dnnl_exec_arg_t){p->tag[i], a->inner ? a->inner : a->user};
    }
    dnnl_primitive_execute(p->prim, strm, n, args);
    for (int i = 0; i < NARGS; i++) {
        conv_arg *a = &p->arg[i];
        if (p->tag[i] && a->reorder && is_out[i] == 1) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->inner}, {DNNL_ARG_TO, a->user}};
            dnnl_primitive_execute(a->reorder, strm, 2, r);
        }
    }
    dnnl_stream_wait(strm);
}

/* The blocked input of p in kept (where the plan keeps it and the caller gave one) or in the scratch;
 * whether it is kept. */
static int src_place(const fv_dnnl_conv *c, conv_prim *p, const float *kept)
{
    int keep = kept && c->src_keepable;
    dnnl_memory_set_data_handle(p->arg[A_SRC].inner, keep ? (void *)kept : p->arg[A_SRC].bound);
    return keep;
}

void fv_dnnl_conv_forward(fv_dnnl_conv *c, float *out, const float *in, const float *W, const float *b, float *kept)
{
    void *buf[NARGS] = {(void *)in, (void *)W, (void *)b, out};
    static const int is_out[NARGS] = {0, 0, 0, 1};
    if (c->src_keepable)
        src_place(c, &c->fwd, kept);
    run(c->strm, &c->fwd, buf, is_out);
}

void fv_dnnl_conv_backward(fv_dnnl_conv *c, float *dinp, float *dW, float *db, const float *dout, const float *in,
                           const float *W, const float *kept)
{
    void *wbuf[NARGS] = {(void *)in, dW, db, (void *)dout};
    const int wout[NARGS] = {c->src_keepable && src_place(c, &c->bwd_weights, kept) ? -1 : 0, 1, 1, 0};
    run(c->strm, &c->bwd_weights, wbuf, wout);
    if (!dinp)
        return;
    void *dbuf[NARGS] = {dinp, (void *)W, NULL, (void *)dout};
    const int dout_[NARGS] = {1, 0, 0, c->dout_shared ? -1 : 0};
    run(c->strm, &c->bwd_data, dbuf, dout_);
}

const char *fv_dnnl_describe(void)
{
    static char buf[128];
    const dnnl_version_t *v = dnnl_version();
    static const struct {
        dnnl_cpu_isa_t isa;
        const char *name;
    } isas[] = {{dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"},
                {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"},
                {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"},
                {dnnl_cpu_isa_avx512_core, "avx512_core"},
                {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"},
                {dnnl_cpu_isa_avx2, "avx2"},
                {dnnl_cpu_isa_avx, "avx"},
                {dnnl_cpu_isa_sse41, "sse41"}};
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const char *name = "all";
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++)
        if (isa == isas[i].isa) {
            name = isas[i].name;
            break;
        }
    snprintf(buf, sizeof buf, "oneDNN %d.%d.%d (CPU ISA %s)", v->major, v->minor, v->patch, name);
    return buf;
}

/* A small C host that embeds Lua 5.4 with prefect.core linked in statically,
 * and runs a Lua script in a simulated 60 fps frame loop, the way a game or a
 * tool would. It measures every frame and reports where the time went, so it
 * shows whether reading task runs ever stalls the loop, and if a frame was
 * late, whose doing it was.
 *
 * usage: host [options] SCRIPT [ARGS...]
 *   --budget-ms MS     time per frame (default 16.667: 60 fps)
 *   --max-frame-ms MS  the bound checked on the worst frame while the script
 *                      runs (default: the budget + 5 ms; 0: report only)
 *   --max-seconds S    give up after this long (default 60)
 *   --idle-seconds S   empty frames run first, as the baseline (default 1)
 *   --gc MODE          how the script's garbage is collected: "incremental"
 *                      (Lua's default), "generational", or "step" (the
 *                      automatic collector stopped; after app.frame the host
 *                      runs a step paying for what the frame allocated)
 *   --frames-csv FILE  one line per frame: phase ("idle" or "query"), frame
 *                      (from 1 in each phase), then in milliseconds start,
 *                      frame_time (to the next start), busy (app.frame, GC
 *                      step and bookkeeping), app_frame, poll, gc, asleep,
 *                      woken_late, cpu_wait, and the Lua heap in heap_kib
 *
 * The script runs once at start-up (its ARGS are `...`) and returns a table:
 *   app.frame(frame_number, now)  called once a frame; returns true when
 *                                 finished, and optionally, as its second
 *                                 value, the seconds it spent in the
 *                                 library's poll (reported apart)
 *   app.report()                  after the loop: a table with
 *                                 { received = n, expected = n, distinct = n, error = msg|nil }
 * The host gives the script a module `host` with `host.now()` (monotonic seconds)
 * and `host.budget` (seconds per frame).
 *
 * Frames start on a fixed grid, one budget apart: the loop sleeps until an
 * absolute deadline on CLOCK_MONOTONIC, so a frame that starts late does not
 * move the ones after it and the rate does not drift. A frame's time, from
 * its start to the next frame's start, is the time it was busy, then asleep,
 * then how late the loop woke up for the next one. On Linux the host also
 * reads how long the thread waited, runnable, for a CPU
 * (/proc/thread-self/schedstat): when that accounts for a late wake-up,
 * another thread had the CPU.
 *
 * Prints the figures, one "ok"/"FAILED" line per check and "N passed, N failed";
 * exits 1 when a check failed, 2 on a usage or start-up error or when the
 * script raised an error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* The C core's entry point (csrc/core.c), linked into this program. */
int luaopen_prefect_core(lua_State *L);

/* One frame; times in seconds on CLOCK_MONOTONIC. */
struct frame {
    double deadline;  /* when it was due */
    double start;     /* when the loop woke up and began it */
    double app_frame; /* in app.frame */
    double poll;      /* of which in the library's poll, as the script said (-1: not said) */
    double gc;        /* in the host's GC step (--gc step) */
    double end;       /* when all its work was over */
    double cpu_wait; /* runnable, waiting for a CPU, since the previous frame's end (-1: unknown) */
    double heap_kib; /* the Lua heap at its end */
};

struct run {
    struct frame *frames;
    long count;
    int finished; /* app.frame returned true */
};

enum gc_mode { GC_INCREMENTAL, GC_GENERATIONAL, GC_STEP };

static double frame_budget = 1.0 / 60.0;
static enum gc_mode gc_mode = GC_INCREMENTAL;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps until an absolute time: unlike a relative sleep, the time spent
 * working out how long to sleep, or an interruption, cannot add up to drift. */
static void sleep_until(double when)
{
    struct timespec ts;
    ts.tv_sec = (time_t)when;
    ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Seconds this thread has spent runnable but waiting for a CPU, or -1 where
 * the system does not say (the second field of Linux's schedstat). */
static double cpu_wait_seconds(void)
{
    unsigned long long run_ns, wait_ns;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    int n;
    if (f == NULL)
        return -1.0;
    n = fscanf(f, "%llu %llu", &run_ns, &wait_ns);
    fclose(f);
    return n == 2 ? (double)wait_ns / 1e9 : -1.0;
}

static double heap_kib(lua_State *L)
{
    return lua_gc(L, LUA_GCCOUNT, 0) + lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0;
}

static int host_now(lua_State *L)
{
    lua_pushnumber(L, now_seconds());
    return 1;
}

static int luaopen_host(lua_State *L)
{
    static const luaL_Reg functions[] = {{"now", host_now}, {NULL, NULL}};
    luaL_newlib(L, functions);
    lua_pushnumber(L, frame_budget);
    lua_setfield(L, -2, "budget");
    return 1;
}

/* Registers the statically linked modules: `require` finds them in
 * package.loaded and never searches package.cpath for them. */
static void open_modules(lua_State *L)
{
    luaL_openlibs(L);
    luaL_requiref(L, "prefect.core", luaopen_prefect_core, 0);
    lua_pop(L, 1);
    luaL_requiref(L, "host", luaopen_host, 0);
    lua_pop(L, 1);
}

/* A message handler that adds a traceback, for errors in the script. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int call(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    int status;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

/* Calls app.frame for frame `f`; returns -1 after printing the script's error. */
static int call_frame(lua_State *L, int app, long number, struct frame *f, int *finished)
{
    double heap_before = heap_kib(L), start = now_seconds();
    lua_getfield(L, app, "frame");
    lua_pushinteger(L, number);
    lua_pushnumber(L, f->start);
    if (call(L, 2, 2) != LUA_OK) {
        fprintf(stderr, "host: frame %ld: %s\n", number, lua_tostring(L, -1));
        return -1;
    }
    *finished = lua_toboolean(L, -2);
    if (lua_type(L, -1) == LUA_TNUMBER)
        f->poll = lua_tonumber(L, -1);
    lua_pop(L, 2);
    f->app_frame = now_seconds() - start;
    if (gc_mode == GC_STEP) {
        /* With the automatic collector stopped, this step is all the
         * collecting there is: it does the work the frame's allocations
         * would have triggered inside app.frame, at a point the host chose,
         * so the heap stays as bounded as with the automatic collector. */
        double allocated = heap_kib(L) - heap_before;
        start = now_seconds();
        lua_gc(L, LUA_GCSTEP, allocated > 0.0 ? (int)allocated + 1 : 1);
        f->gc = now_seconds() - start;
    }
    return 0;
}

/* Runs frames until app.frame (the function in field "frame" of the table at
 * index `app`; none when `app` is 0) returns true, or `max_frames` frames
 * (the size of run->frames). Returns 0, or -1 after printing the error the
 * script raised. */
static int run_frames(lua_State *L, int app, long max_frames, struct run *run)
{
    double deadline = now_seconds(), wait_before = cpu_wait_seconds();
    run->count = 0;
    run->finished = 0;
    while (!run->finished && run->count < max_frames) {
        struct frame *f = &run->frames[run->count];
        double wait_now;
        sleep_until(deadline);
        f->deadline = deadline;
        f->start = now_seconds();
        wait_now = cpu_wait_seconds();
        f->cpu_wait = wait_before >= 0.0 && wait_now >= 0.0 ? wait_now - wait_before : -1.0;
        f->app_frame = f->gc = 0.0;
        f->poll = -1.0;
        if (app != 0 && call_frame(L, app, run->count + 1, f, &run->finished) != 0)
            return -1;
        f->heap_kib = heap_kib(L);
        f->end = now_seconds();
        wait_before = cpu_wait_seconds();
        run->count++;
        /* The next frame is due one budget after this one was due. After a
         * frame that ran past that, the grid restarts from now instead of
         * running frames back to back to catch up. */
        deadline += frame_budget;
        if (deadline < f->end)
            deadline = f->end;
    }
    if (!run->finished && app != 0)
        fprintf(stderr, "host: the script did not finish in %ld frames\n", max_frames);
    return 0;
}

/* Frame i's time: from its start to the next one's start (i < count - 1). */
static double frame_time(const struct run *run, long i)
{
    return run->frames[i + 1].start - run->frames[i].start;
}

static double woken_late(const struct frame *f)
{
    return f->start - f->deadline;
}

static double worst_frame_time(const struct run *run)
{
    double worst = 0.0;
    long i;
    for (i = 0; i + 1 < run->count; i++)
        if (frame_time(run, i) > worst)
            worst = frame_time(run, i);
    return worst;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct spread {
    double worst, p99, median, mean;
};

/* Of `n` values (n > 0), in milliseconds; sorts them. Percentiles by nearest rank. */
static struct spread spread_of(double *values, long n)
{
    struct spread s;
    double sum = 0.0;
    long i;
    qsort(values, (size_t)n, sizeof *values, compare_doubles);
    for (i = 0; i < n; i++)
        sum += values[i];
    s.worst = values[n - 1] * 1000.0;
    s.p99 = values[(long)(0.99 * (double)n + 0.999999) - 1] * 1000.0;
    s.median = values[(n + 1) / 2 - 1] * 1000.0;
    s.mean = sum / (double)n * 1000.0;
    return s;
}

/* `scratch` holds at least run->count values. */
static void print_summary(const char *what, const struct run *run, int with_script, double *scratch)
{
    struct spread times, late, app_frame;
    long i, n = run->count - 1, over = 0, worst = 0;
    double poll = -1.0, gc = 0.0, cpu_wait = 0.0, peak = 0.0;
    int cpu_wait_known = 1;
    const struct frame *f, *next;
    if (n < 1) {
        printf("%s: too few frames to measure\n", what);
        return;
    }
    for (i = 0; i < n; i++) {
        scratch[i] = frame_time(run, i);
        if (scratch[i] > frame_time(run, worst))
            worst = i;
        if (scratch[i] > frame_budget + 0.002)
            over++;
    }
    times = spread_of(scratch, n);
    printf("%s: %ld frames; frame time worst %.1f ms, p99 %.1f ms, median %.1f ms, mean %.2f ms; "
           "%ld over the budget + 2 ms\n",
           what, n, times.worst, times.p99, times.median, times.mean, over);

    for (i = 0; i < run->count; i++) {
        scratch[i] = woken_late(&run->frames[i]);
        if (run->frames[i].cpu_wait < 0.0)
            cpu_wait_known = 0;
        else
            cpu_wait += run->frames[i].cpu_wait;
        if (run->frames[i].heap_kib > peak)
            peak = run->frames[i].heap_kib;
    }
    late = spread_of(scratch, run->count);
    printf("  woken late: worst %.1f ms, p99 %.1f ms, median %.2f ms", late.worst, late.p99,
           late.median);
    if (cpu_wait_known)
        printf("; runnable, waiting for a CPU: %.1f ms in all", cpu_wait * 1000.0);
    printf("\n");

    if (with_script) {
        for (i = 0; i < run->count; i++) {
            scratch[i] = run->frames[i].app_frame;
            if (run->frames[i].poll > poll)
                poll = run->frames[i].poll;
            if (run->frames[i].gc > gc)
                gc = run->frames[i].gc;
        }
        app_frame = spread_of(scratch, run->count);
        printf("  in app.frame: worst %.1f ms, p99 %.1f ms, median %.2f ms", app_frame.worst,
               app_frame.p99, app_frame.median);
        if (poll >= 0.0)
            printf("; worst in poll %.1f ms", poll * 1000.0);
        if (gc_mode == GC_STEP)
            printf("; worst GC step %.1f ms", gc * 1000.0);
        printf("; Lua heap peak %.0f KiB\n", peak);
    }

    f = &run->frames[worst];
    next = &run->frames[worst + 1];
    printf("  worst frame #%ld: %.1f ms = busy %.1f ms", worst + 1, frame_time(run, worst) * 1000.0,
           (f->end - f->start) * 1000.0);
    if (with_script) {
        printf(" (app.frame %.1f ms", f->app_frame * 1000.0);
        if (f->poll >= 0.0)
            printf(", poll %.1f ms of it", f->poll * 1000.0);
        if (gc_mode == GC_STEP)
            printf("; GC step %.1f ms", f->gc * 1000.0);
        printf(")");
    }
    printf(" + asleep %.1f ms + woken %.1f ms late", (next->deadline - f->end) * 1000.0,
           woken_late(next) * 1000.0);
    if (next->cpu_wait >= 0.0)
        printf(" (%.1f ms of it runnable, waiting for a CPU)", next->cpu_wait * 1000.0);
    printf("\n");
}

/* A field in milliseconds, or an empty one for a figure that is not known. */
static void csv_ms(FILE *out, int known, double seconds)
{
    if (known)
        fprintf(out, ",%.3f", seconds * 1000.0);
    else
        fputs(",", out);
}

static int write_csv(const char *path, const struct run *idle, const struct run *busy)
{
    const struct run *runs[2];
    const char *names[2] = {"idle", "query"};
    double origin = idle->frames[0].start;
    long i;
    int r;
    FILE *out = fopen(path, "w");
    if (out == NULL)
        return -1;
    runs[0] = idle;
    runs[1] = busy;
    fputs("phase,frame,start,frame_time,busy,app_frame,poll,gc,asleep,woken_late,cpu_wait,"
          "heap_kib\n",
          out);
    for (r = 0; r < 2; r++) {
        for (i = 0; i < runs[r]->count; i++) {
            const struct frame *f = &runs[r]->frames[i];
            int has_next = i + 1 < runs[r]->count;
            fprintf(out, "%s,%ld", names[r], i + 1);
            csv_ms(out, 1, f->start - origin);
            csv_ms(out, has_next, has_next ? frame_time(runs[r], i) : 0.0);
            csv_ms(out, 1, f->end - f->start);
            csv_ms(out, 1, f->app_frame);
            csv_ms(out, f->poll >= 0.0, f->poll);
            csv_ms(out, 1, f->gc);
            csv_ms(out, has_next, has_next ? f[1].deadline - f->end : 0.0);
            csv_ms(out, 1, woken_late(f));
            csv_ms(out, f->cpu_wait >= 0.0, f->cpu_wait);
            fprintf(out, ",%.1f\n", f->heap_kib);
        }
    }
    return fclose(out) == 0 ? 0 : -1;
}

static int passed, failed;

static void check(int ok, const char *what)
{
    if (ok)
        passed++;
    else
        failed++;
    printf("%s %s\n", ok ? "ok    " : "FAILED", what);
}

static long field_integer(lua_State *L, int idx, const char *name)
{
    long v;
    lua_getfield(L, idx, name);
    v = (long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--budget-ms MS] [--max-frame-ms MS] [--max-seconds S] [--idle-seconds S]\n"
            "          [--gc incremental|generational|step] [--frames-csv FILE] SCRIPT [ARGS...]\n",
            prog);
    return 2;
}

/* Checks what the script received against what it expected; 0 or -1. */
static int check_received(lua_State *L, int app, const struct run *busy)
{
    char what[160];
    long received, expected, distinct;
    lua_getfield(L, app, "report");
    if (call(L, 0, 1) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "host: report: %s\n",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a table");
        return -1;
    }
    received = field_integer(L, -1, "received");
    expected = field_integer(L, -1, "expected");
    distinct = field_integer(L, -1, "distinct");
    lua_getfield(L, -1, "error");
    if (!lua_isnil(L, -1))
        printf("error: %s\n", luaL_tolstring(L, -1, NULL));
    printf("runs: %ld received, %ld distinct, %ld expected (client:count)\n", received, distinct,
           expected);
    snprintf(what, sizeof what, "every run received once (%ld of %ld)", distinct, expected);
    check(busy->finished && expected > 0 && received == expected && distinct == expected, what);
    return 0;
}

int main(int argc, char **argv)
{
    double max_frame = -1.0, max_seconds = 60.0, idle_seconds = 1.0, start, worst;
    const char *csv = NULL;
    struct run idle, busy;
    long max_frames, idle_frames;
    int argi = 1, nargs, app, status = 2;
    double *scratch = NULL;
    lua_State *L = NULL;
    char what[160];

    idle.frames = busy.frames = NULL;
    while (argi < argc && strncmp(argv[argi], "--", 2) == 0) {
        const char *opt = argv[argi], *value;
        if (argi + 1 >= argc)
            return usage(argv[0]);
        value = argv[argi + 1];
        if (strcmp(opt, "--budget-ms") == 0)
            frame_budget = atof(value) / 1000.0;
        else if (strcmp(opt, "--max-frame-ms") == 0)
            max_frame = atof(value) / 1000.0;
        else if (strcmp(opt, "--max-seconds") == 0)
            max_seconds = atof(value);
        else if (strcmp(opt, "--idle-seconds") == 0)
            idle_seconds = atof(value);
        else if (strcmp(opt, "--frames-csv") == 0)
            csv = value;
        else if (strcmp(opt, "--gc") == 0 && strcmp(value, "incremental") == 0)
            gc_mode = GC_INCREMENTAL;
        else if (strcmp(opt, "--gc") == 0 && strcmp(value, "generational") == 0)
            gc_mode = GC_GENERATIONAL;
        else if (strcmp(opt, "--gc") == 0 && strcmp(value, "step") == 0)
            gc_mode = GC_STEP;
        else
            return usage(argv[0]);
        argi += 2;
    }
    if (argi >= argc || frame_budget <= 0.0 || max_seconds <= 0.0 || idle_seconds <= 0.0)
        return usage(argv[0]);
    if (max_frame < 0.0)
        max_frame = frame_budget + 0.005;
    max_frames = (long)(max_seconds / frame_budget) + 1;
    idle_frames = (long)(idle_seconds / frame_budget) + 1;

    idle.frames = calloc((size_t)idle_frames, sizeof *idle.frames);
    busy.frames = calloc((size_t)max_frames, sizeof *busy.frames);
    scratch =
        calloc((size_t)(max_frames > idle_frames ? max_frames : idle_frames), sizeof *scratch);
    L = luaL_newstate();
    if (idle.frames == NULL || busy.frames == NULL || scratch == NULL || L == NULL) {
        fprintf(stderr, "host: out of memory\n");
        goto done;
    }
    open_modules(L);
    if (luaL_loadfile(L, argv[argi]) != LUA_OK) {
        fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
        goto done;
    }
    for (nargs = 0; argi + 1 + nargs < argc; nargs++)
        lua_pushstring(L, argv[argi + 1 + nargs]);
    if (call(L, nargs, 1) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "host: %s\n",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "the script did not return a table");
        goto done;
    }
    app = lua_gettop(L);
    if (gc_mode == GC_GENERATIONAL)
        lua_gc(L, LUA_GCGEN, 0, 0);
    else if (gc_mode == GC_STEP)
        lua_gc(L, LUA_GCSTOP, 0);

    /* Empty frames first: how steady the loop is without the query, on this
     * machine at this moment (the figures to compare with). */
    run_frames(L, 0, idle_frames, &idle);
    start = now_seconds();
    if (run_frames(L, app, max_frames, &busy) != 0)
        goto done;

    printf("frames: %ld in %.2f s with the query in flight (budget %.1f ms a frame)\n", busy.count,
           now_seconds() - start, frame_budget * 1000.0);
    print_summary("idle loop, no query", &idle, 0, scratch);
    print_summary("query in flight", &busy, 1, scratch);
    if (csv != NULL && write_csv(csv, &idle, &busy) != 0)
        fprintf(stderr, "host: cannot write %s\n", csv);

    if (check_received(L, app, &busy) != 0)
        goto done;
    if (max_frame > 0.0) {
        worst = worst_frame_time(&busy);
        snprintf(what, sizeof what, "worst frame %.1f ms < %.1f ms while the query is in flight",
                 worst * 1000.0, max_frame * 1000.0);
        check(busy.count > 1 && worst < max_frame, what);
    }
    printf("%d passed, %d failed\n", passed, failed);
    status = failed ? 1 : 0;
done:
    if (L != NULL)
        lua_close(L);
    free(idle.frames);
    free(busy.frames);
    free(scratch);
    return status;
}

"""The circuit's graph: topological order, cycles and the strongly connected components.

A circuit is a directed graph of populations (nodes) and synapse objects (edges ``pre -> post``).
Without cycles it has a steady state, the feed-forward pass in :func:`topological_order`. With
cycles (self-connections included) it lives in time only; :func:`components` splits it into
strongly connected components in an order in which every component comes after the components
that feed it (the condensation is acyclic), so that time-stepping engines can treat each
acyclic part as a whole trajectory and step only the recurrent blocks.
"""

from __future__ import annotations

from ..errors import ConfigError


def find_cycle(names: list[str], edges: list[tuple[str, str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the graph (a self-connection is ``[a, a]``), or None."""
    children = {n: [] for n in names}
    for a, b in edges:
        children[a].append(b)
    state = dict.fromkeys(names, 0)  # 0 unseen, 1 on the current path, 2 done
    for root in names:
        if state[root]:
            continue
        path, stack = [root], [iter(children[root])]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[child] == 1:
                return path[path.index(child):] + [child]
            elif state[child] == 0:
                state[child] = 1
                path.append(child)
                stack.append(iter(children[child]))
    return None


def topological_order(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm, ties broken by the order of ``names``; raises on a cycle, naming it."""
    cycle = find_cycle(names, edges)
    if cycle is not None:
        raise ConfigError(f"Circuit: the synapses form a cycle {' -> '.join(cycle)}; a circuit must be a "
                          "directed acyclic graph here")
    indegree = {n: 0 for n in names}
    children = {n: [] for n in names}
    for a, b in edges:
        indegree[b] += 1
        children[a].append(b)
    order, ready = [], [n for n in names if indegree[n] == 0]
    while ready:
        node = ready.pop(0)
        order.append(node)
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
        ready.sort(key=names.index)
    return order


def components(names: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components, each in the order of ``names``, the components in a
    topological order of the condensation (ties broken by the first member's place in ``names``).

    For an acyclic graph every component is one population and the order is
    :func:`topological_order`'s.
    """
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    children = {n: [] for n in names}
    for a, b in edges:
        children[a].append(b)

    def visit(root):  # Tarjan's algorithm, iterative
        work = [(root, iter(children[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            child = next(it, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(children[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                found.append(sorted(comp, key=names.index))

    for n in names:
        if n not in index:
            visit(n)
    member = {n: k for k, comp in enumerate(found) for n in comp}
    keys = [comp[0] for comp in found]
    cond_edges = {(keys[member[a]], keys[member[b]]) for a, b in edges if member[a] != member[b]}
    order = topological_order(keys, sorted(cond_edges, key=lambda e: (names.index(e[0]), names.index(e[1]))))
    by_key = {comp[0]: comp for comp in found}
    return [by_key[k] for k in order]


def is_recurrent(component: list[str], edges: list[tuple[str, str]]) -> bool:
    """Whether a component holds a cycle: more than one population, or a self-connection."""
    return len(component) > 1 or (component[0], component[0]) in edges

using TorchSharp;
using static TorchSharp.torch;

namespace MrVae.Model.Objectives;

/// <summary>
/// The coordinator's backward in two parts around <see cref="CoordinatorOutput.ParameterCut"/>: first the members'
/// gradients ∂L/∂μ_j, ∂L/∂log σ²_j (all the members wait for) and the gradients at the cut; then, when the caller
/// chooses (the coordinator grain: while the members run the next encode), the parameters' part from the cut, which
/// accumulates into the parameters' .grad. The two parts run the same nodes with the same incoming gradients as one
/// backward over everything. Without a cut it is that one backward, and <see cref="FinishParameters"/> does nothing.
/// </summary>
public sealed class SplitBackward : IDisposable
{
    readonly Tensor[] cut, cutGradients;
    bool finished;

    /// <summary>∂L/∂(member input) per entry of the inputs given to <see cref="Run"/> (zeros where unused).</summary>
    public Tensor[] MemberGradients { get; }

    /// <summary>True until <see cref="FinishParameters"/> has run the parameters' part.</summary>
    public bool ParametersPending => cut.Length > 0 && !finished;

    SplitBackward(Tensor[] memberGradients, Tensor[] cut, Tensor[] cutGradients)
    {
        MemberGradients = memberGradients; this.cut = cut; this.cutGradients = cutGradients;
    }

    /// <param name="roots">Tensors whose gradients are given (the loss, the decoder inputs).</param>
    /// <param name="rootGradients">∂L/∂root for each root.</param>
    /// <param name="memberInputs">The leaves standing in for the members' outputs (μ_j, log σ²_j), requiring grad.</param>
    /// <param name="cut">The output's <see cref="CoordinatorOutput.ParameterCut"/>: this object takes the tensors over.</param>
    public static SplitBackward Run(IList<Tensor> roots, IList<Tensor> rootGradients, IList<Tensor> memberInputs, Tensor[] cut)
    {
        if (cut.Length == 0)
        {
            autograd.backward(roots, rootGradients);
            return new SplitBackward(memberInputs.Select(x => x.grad is { } g ? g.detach().clone() : zeros_like(x)).ToArray(), [], []);
        }
        // autograd.grad stops at the cut (non-leaf inputs): their grad_fn and everything below stays unrun and intact.
        var gradients = autograd.grad(roots, [.. memberInputs, .. cut], rootGradients, retain_graph: false, create_graph: false, allow_unused: true);
        var members = memberInputs.Select((x, i) => gradients[i] ?? zeros_like(x)).ToArray();
        var used = Enumerable.Range(0, cut.Length).Where(i => gradients[memberInputs.Count + i] is not null).ToArray();
        // This object owns the cut and its gradients until the parameters' part has run, whatever scope made them.
        var owned = used.Select(i => cut[i]).ToArray();
        var ownedGradients = used.Select(i => gradients[memberInputs.Count + i]).ToArray();
        foreach (var t in owned.Concat(ownedGradients)) t.DetachFromDisposeScope();
        return new SplitBackward(members, owned, ownedGradients);
    }

    /// <summary>The parameters' part: backward from the cut with the gradients the first part left there.</summary>
    public void FinishParameters()
    {
        if (!ParametersPending) return;
        finished = true;
        autograd.backward(cut, cutGradients);
        Release();
    }

    /// <summary>Releases the cut without running the parameters' part (a step abandoned after its first part).</summary>
    public void Dispose()
    {
        if (finished) return;
        finished = true;
        Release();
    }

    void Release()
    {
        foreach (var t in cut.Concat(cutGradients)) t.Dispose();
    }
}
